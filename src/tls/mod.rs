//! TLS: terminating it for clients (`Terminator`, this file) and speaking it
//! to `https://` backends (`backend`). rustls with the aws-lc-rs provider;
//! TLS 1.2 and 1.3 only.
//!
//! The terminator holds the certificates (the first is the default; the
//! others are chosen by the client's SNI, from the DNS names in each
//! certificate) as one rustls `ServerConfig` behind a shared pointer: a new
//! connection takes the one in force, so replacing it (a reload, or the
//! files changing on disk, checked every `tls.watch_interval`) reaches new
//! connections and leaves open ones alone.
//!
//! A handshake runs in its connection's task, after any PROXY header, within
//! `tls.handshake_timeout`; a failed one closes the connection, counted by
//! reason (`tether_tls_handshake_failures_total`).
//!
//! ALPN offers `h2` and `http/1.1` (`h2` only with `http2.enabled`): a
//! connection that picks `h2` is served by `crate::http2`.

pub mod backend;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One certificate (full chain, PEM) and its private key (PEM).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Client-side TLS as configured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerSettings {
    /// The first is served when no other matches the client's SNI.
    pub certificates: Vec<CertFiles>,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How often the files are checked for a change; `None`: never (a reload still reads them).
    #[serde(with = "humantime_serde")]
    pub watch_interval: Option<Duration>,
    /// Offer `h2` in ALPN (`http2.enabled`).
    #[serde(skip)]
    pub alpn_h2: bool,
}

/// Terminates TLS for the proxy listener.
pub struct Terminator {
    config: ArcSwap<rustls::ServerConfig>,
    settings: ServerSettings,
    /// The files' modification times and sizes when last loaded.
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator")
            .field("settings", &self.settings)
            .finish()
    }
}

/// A problem with a TLS file: which key it is under, what is wrong.
#[derive(Debug)]
pub struct FileError {
    pub key: String,
    pub problem: String,
}

impl Terminator {
    /// Loads every certificate and key; any problem is an error naming the file.
    pub fn load(settings: ServerSettings) -> Result<Terminator, FileError> {
        // Stamped first: a change while they are read is seen at the next check.
        let stamps = stamps(&settings.certificates);
        let config = server_config(&settings.certificates, settings.alpn_h2)?;
        Ok(Terminator {
            config: ArcSwap::from_pointee(config),
            settings,
            stamps: Mutex::new(stamps),
        })
    }

    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// The configuration a new connection's handshake uses.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.settings.handshake_timeout
    }

    /// Loads the files again if any changed since they were last loaded.
    /// `None`: nothing changed. A failed load (a certificate written before
    /// its key, say) keeps the certificates in force and is tried again at
    /// the next change.
    pub fn refresh_if_changed(&self) -> Option<Result<(), FileError>> {
        let now = stamps(&self.settings.certificates);
        let mut seen = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return None;
        }
        *seen = now;
        drop(seen);
        Some(
            server_config(&self.settings.certificates, self.settings.alpn_h2).map(|config| {
                self.config.store(Arc::new(config));
            }),
        )
    }
}

fn stamps(files: &[CertFiles]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .flat_map(|f| [&f.cert, &f.key])
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// The crypto provider for both sides.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn server_config(files: &[CertFiles], alpn_h2: bool) -> Result<rustls::ServerConfig, FileError> {
    let provider = provider();
    let mut served = Vec::new();
    for (i, f) in files.iter().enumerate() {
        // The first is `tls.cert`/`tls.key` when given, else `[[tls.certificates]]` 0.
        let keys = match i {
            0 => ("tls.cert".to_owned(), "tls.key".to_owned()),
            i => (
                format!("tls.certificates[{}].cert", i - 1),
                format!("tls.certificates[{}].key", i - 1),
            ),
        };
        served.push(Served::load(f, &keys, &provider)?);
    }
    let resolver = Sni { served };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| FileError {
            key: "tls".into(),
            problem: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = match alpn_h2 {
        true => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        false => vec![b"http/1.1".to_vec()],
    };
    // Stateless resumption (tickets) for TLS 1.2 and 1.3: a returning client
    // skips the key exchange's signature, the costly part of a handshake.
    // One ticketer for the process (it rotates its own keys), so a reload or
    // a renewed certificate does not void every client's ticket.
    config.ticketer = ticketer()?;
    Ok(config)
}

fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, FileError> {
    static TICKETER: std::sync::OnceLock<Arc<dyn rustls::server::ProducesTickets>> =
        std::sync::OnceLock::new();
    if let Some(t) = TICKETER.get() {
        return Ok(t.clone());
    }
    let made = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| FileError {
        key: "tls".into(),
        problem: format!("session tickets: {e}"),
    })?;
    Ok(TICKETER.get_or_init(|| made).clone())
}

/// A certificate with the names it serves.
#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    /// Lower-case DNS names; `*.example.com` serves one label below.
    names: Vec<String>,
}

impl Served {
    fn load(
        files: &CertFiles,
        (cert_key, key_key): &(String, String),
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Served, FileError> {
        let cert_err = |problem: String| FileError {
            key: cert_key.clone(),
            problem: format!("{}: {problem}", files.cert.display()),
        };
        let key_err = |problem: String| FileError {
            key: key_key.clone(),
            problem: format!("{}: {problem}", files.key.display()),
        };
        let pem = read(&files.cert).map_err(cert_err)?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(format!("not a PEM certificate chain ({e})")))?;
        if chain.is_empty() {
            return Err(cert_err("holds no certificate".into()));
        }
        let pem = read(&files.key).map_err(key_err)?;
        let der = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| key_err(format!("not a PEM private key ({e})")))?;
        let signing = provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| key_err(format!("unusable private key ({e})")))?;
        let key = CertifiedKey::new(chain, signing);
        key.keys_match().map_err(|_| FileError {
            key: key_key.clone(),
            problem: format!(
                "{} does not match the certificate in {}",
                files.key.display(),
                files.cert.display()
            ),
        })?;
        let info = leaf_info(&key.cert[0]).map_err(cert_err)?;
        let now = SystemTime::now();
        if info.not_after < now {
            tracing::warn!(cert = %files.cert.display(), "TLS certificate has expired: clients will refuse it");
        } else if info.not_before > now {
            tracing::warn!(cert = %files.cert.display(), "TLS certificate is not valid yet: clients will refuse it");
        }
        tracing::info!(cert = %files.cert.display(), names = ?info.names, expires = %humantime::format_rfc3339_seconds(info.not_after), "TLS certificate loaded");
        Ok(Served {
            key: Arc::new(key),
            names: info.names,
        })
    }

    fn serves(&self, name: &str) -> bool {
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(parent) => name
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => n == name,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read it ({e})"))
}

/// What the leaf certificate says about itself.
struct LeafInfo {
    names: Vec<String>,
    not_before: SystemTime,
    not_after: SystemTime,
}

fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable certificate ({e})"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // An old certificate without names in SAN: its common name.
        for cn in cert.subject().iter_common_name() {
            if let Ok(n) = cn.as_str() {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    Ok(LeafInfo {
        names,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
    })
}

/// Picks a certificate by the client's SNI; the first one otherwise.
#[derive(Debug)]
struct Sni {
    served: Vec<Served>,
}

impl ResolvesServerCert for Sni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(s) = self.served.iter().find(|s| s.serves(&name)) {
                return Some(s.key.clone());
            }
        }
        self.served.first().map(|s| s.key.clone())
    }
}

/// Why a handshake failed, as a metric label.
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return "eof";
    }
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls_failure_reason(tls),
        None => "io",
    }
}

/// Why rustls refused a handshake, as a metric label.
pub fn tls_failure_reason(tls: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match tls {
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => "not_tls",
        E::InvalidMessage(_) | E::InappropriateHandshakeMessage { .. } => "protocol",
        E::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon) => "no_cipher",
        E::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
            | rustls::PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => "version",
        E::PeerIncompatible(_) => "incompatible",
        E::NoApplicationProtocol => "alpn",
        E::AlertReceived(_) => "alert",
        _ => "other",
    }
}

/// The negotiated version, as a metric label.
pub fn version_label(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        _ => "other",
    }
}

#[cfg(test)]
mod tests;
