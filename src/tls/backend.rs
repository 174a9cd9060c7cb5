//! TLS to `https://` backends: the server's certificate verified against the
//! system roots, or only against `tls.backend_ca` when given (a private CA, a
//! service mesh); SNI from the backend's host; a client certificate when
//! `tls.backend_cert`/`tls.backend_key` are given (mTLS). Verification is off
//! only with `tls.insecure_skip_verify = true`, which is logged as a warning
//! at start.
//!
//! The system roots are read on the first `https://` connection, not at start:
//! a Tether with no TLS backend never reads them.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use super::{provider, FileError, VERSIONS};

/// Backend-side TLS as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// The backend TLS in force, shared by the upstream side and the health
/// checks; a reload replaces it.
pub type Shared = Arc<arc_swap::ArcSwap<BackendTls>>;

/// What connects to `https://` backends.
pub struct BackendTls {
    settings: BackendSettings,
    /// Built now when the settings name files (so a bad one is an error at
    /// start); else on first use, from the system roots.
    config: OnceLock<Arc<rustls::ClientConfig>>,
    /// The same, offering ALPN `h2` only (backends configured `h2`).
    config_h2: OnceLock<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("settings", &self.settings)
            .finish()
    }
}

impl BackendTls {
    pub fn new(settings: BackendSettings) -> Result<BackendTls, FileError> {
        let tls = BackendTls {
            config: OnceLock::new(),
            config_h2: OnceLock::new(),
            settings,
        };
        let s = &tls.settings;
        if s.insecure_skip_verify && s.ca.is_some() {
            return Err(FileError {
                key: "tls.insecure_skip_verify".into(),
                problem:
                    "verifies nothing, so tls.backend_ca would be ignored: give one or the other"
                        .into(),
            });
        }
        if tls.has_files() || s.insecure_skip_verify {
            let config = tls.build()?;
            let _ = tls.config.set(Arc::new(config));
        }
        Ok(tls)
    }

    /// No backend TLS configured: the system roots, read on first use.
    pub fn shared_default() -> Shared {
        let tls = BackendTls {
            settings: BackendSettings::default(),
            config: OnceLock::new(),
            config_h2: OnceLock::new(),
        };
        Arc::new(arc_swap::ArcSwap::from_pointee(tls))
    }

    /// Whether it reads files (a CA, a client certificate): a reload reads them again.
    pub fn has_files(&self) -> bool {
        let s = &self.settings;
        s.ca.is_some() || s.cert.is_some() || s.key.is_some()
    }

    pub fn settings(&self) -> &BackendSettings {
        &self.settings
    }

    fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config
            .get_or_init(|| {
                // Only the system roots are read here; they cannot fail to
                // parse as a whole (bad ones are skipped and logged).
                Arc::new(self.build().unwrap_or_else(|e| {
                    tracing::error!(problem = %e.problem, "backend TLS configuration");
                    empty_config()
                }))
            })
            .clone()
    }

    /// TLS over `tcp` to the backend at `host` (a name or an IP address).
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = server_name(host)?;
        tokio_rustls::TlsConnector::from(self.config())
            .connect(name, tcp)
            .await
    }

    /// As `connect`, offering ALPN `h2` only: the caller checks the server
    /// picked it (one that ignores ALPN picks nothing).
    pub async fn connect_h2(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = server_name(host)?;
        let config = self
            .config_h2
            .get_or_init(|| {
                let mut config = (*self.config()).clone();
                config.alpn_protocols = vec![b"h2".to_vec()];
                Arc::new(config)
            })
            .clone();
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    }

    fn build(&self) -> Result<rustls::ClientConfig, FileError> {
        let s = &self.settings;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| FileError {
                key: "tls".into(),
                problem: e.to_string(),
            })?;
        let builder = if s.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let mut config = match (&s.cert, &s.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| FileError {
                        key: "tls.backend_cert".into(),
                        problem: format!("{}: {e}", cert.display()),
                    })?;
                let der = PrivateKeyDer::from_pem_file(key).map_err(|e| FileError {
                    key: "tls.backend_key".into(),
                    problem: format!("{}: {e}", key.display()),
                })?;
                builder
                    .with_client_auth_cert(chain, der)
                    .map_err(|e| FileError {
                        key: "tls.backend_key".into(),
                        problem: format!("{}: {e}", key.display()),
                    })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(FileError {
                    key: "tls.backend_cert".into(),
                    problem: "give tls.backend_cert and tls.backend_key together".into(),
                })
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    fn roots(&self) -> Result<rustls::RootCertStore, FileError> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &self.settings.ca {
            let err = |problem: String| FileError {
                key: "tls.backend_ca".into(),
                problem: format!("{}: {problem}", ca.display()),
            };
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| err(e.to_string()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(err("holds no usable CA certificate".into()));
            }
            return Ok(roots);
        }
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "reading the system's CA certificates");
        }
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                "no system CA certificate found: https:// backends cannot be verified (set tls.backend_ca)"
            );
        }
        Ok(roots)
    }
}

/// A config that trusts nothing: every backend handshake fails, clearly.
fn empty_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .expect("the provider supports TLS 1.2 and 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// The name sent in SNI and verified in the certificate.
fn server_name(host: &str) -> std::io::Result<ServerName<'static>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host} is not a TLS server name: {e}"),
        )
    })
}

/// `tls.insecure_skip_verify`: any certificate is accepted (signatures are
/// still checked, so the handshake is well-formed).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
