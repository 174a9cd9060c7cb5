//! Discovery: where backends come from besides the config's `http://` list.
//!
//! - `dns://NAME:PORT`: the A/AAAA records of NAME (a Kubernetes headless
//!   Service), each address a backend `ip:PORT`;
//! - `srv://_service._tcp.DOMAIN`: SRV records, target addresses and ports;
//! - a backends file, one `http://host:port` a line (`#` comments), read
//!   again when it changes.
//!
//! Each source is looked up every `discovery.interval` and its answer given
//! to the `Fleet`. A failed lookup (an error, no records, an unreadable
//! file) keeps the last known set, with a warning and a metric: discovery
//! never empties a pool.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use http::uri::{Authority, Scheme};
use tokio::task::AbortHandle;

use super::fleet::{Entry, Fleet};
use super::Protocol;
use crate::metrics::{self, Metrics};

/// A discovered source of backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `protocol`: how every backend it yields is spoken to.
    Dns {
        name: String,
        port: u16,
        protocol: Protocol,
    },
    Srv {
        name: String,
        protocol: Protocol,
    },
    File(PathBuf),
}

impl Source {
    /// The source's name in the admin API, metrics and logs.
    pub fn label(&self) -> String {
        match self {
            Source::Dns { name, port, .. } => format!("dns://{name}:{port}"),
            Source::Srv { name, .. } => format!("srv://{name}"),
            Source::File(path) => format!("file:{}", path.display()),
        }
    }

    /// The same source, its backends spoken to over `protocol` (a file's
    /// lines are URLs and stay HTTP/1.1).
    pub fn with_protocol(mut self, p: Protocol) -> Source {
        match &mut self {
            Source::Dns { protocol, .. } | Source::Srv { protocol, .. } => *protocol = p,
            Source::File(_) => {}
        }
        self
    }

    /// How the backends it yields are spoken to.
    pub fn protocol(&self) -> Protocol {
        match self {
            Source::Dns { protocol, .. } | Source::Srv { protocol, .. } => *protocol,
            Source::File(_) => Protocol::Http1,
        }
    }

    /// Parses `dns://NAME:PORT` or `srv://NAME`; `None` for other schemes.
    pub fn parse(url: &str) -> Option<Result<Source, String>> {
        if let Some(rest) = url.strip_prefix("dns://") {
            let rest = rest.trim_end_matches('/');
            return Some(match rest.rsplit_once(':') {
                Some((name, port)) if valid_name(name) => port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .map(|port| Source::Dns {
                        name: name.to_ascii_lowercase(),
                        port,
                        protocol: Protocol::Http1,
                    })
                    .ok_or_else(|| format!("'{url}': the port must be 1-65535")),
                _ => Err(format!("'{url}' must be dns://NAME:PORT")),
            });
        }
        if let Some(rest) = url.strip_prefix("srv://") {
            let name = rest.trim_end_matches('/');
            return Some(if valid_name(name) && name.starts_with('_') {
                Ok(Source::Srv {
                    name: name.to_ascii_lowercase(),
                    protocol: Protocol::Http1,
                })
            } else {
                Err(format!("'{url}' must be srv://_service._tcp.DOMAIN"))
            });
        }
        None
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Parses a plain backend URL, `http://host[:port]` or `https://host[:port]`
/// with no path; the port defaults to the scheme's (80, 443).
pub fn parse_http(url: &str) -> Result<Entry, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    let scheme = uri
        .scheme()
        .ok_or_else(|| format!("'{url}' needs a scheme: http://host:port"))?;
    let scheme = match scheme.as_str() {
        "http" => Scheme::HTTP,
        "https" => Scheme::HTTPS,
        _ => {
            return Err(format!(
                "'{url}': backends are http://, https://, dns:// or srv:// URLs"
            ))
        }
    };
    let mut authority = uri
        .authority()
        .ok_or_else(|| format!("'{url}' needs a host"))?
        .clone();
    if authority.host().is_empty()
        || authority.as_str().contains('@')
        || authority.as_str().ends_with(':')
    {
        return Err(format!("'{url}' needs a plain host[:port]"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "'{url}': a backend is an origin; paths pass through unchanged, so give none"
        ));
    }
    if authority.port().is_none() {
        let port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        authority = Authority::try_from(format!("{authority}:{port}"))
            .map_err(|e| format!("'{url}': {e}"))?;
    }
    Ok(Entry {
        scheme,
        authority,
        drain: false,
        protocol: Protocol::Http1,
    })
}

/// How discovery runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiscoverySettings {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A DNS server to ask instead of the system's (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        DiscoverySettings {
            interval: Duration::from_secs(5),
            resolver: None,
        }
    }
}

/// Starts one task per source; each reports to `fleet` until aborted.
pub fn spawn(
    sources: &[Source],
    settings: &DiscoverySettings,
    fleet: Arc<Fleet>,
    metrics: Arc<Metrics>,
) -> Vec<AbortHandle> {
    if sources.is_empty() {
        return Vec::new();
    }
    let needs_dns = sources.iter().any(|s| !matches!(s, Source::File(_)));
    let resolver = match needs_dns.then(|| resolver(settings)) {
        Some(Ok(r)) => Some(Arc::new(r)),
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot set up the DNS resolver; dns:// and srv:// discovery is off");
            None
        }
        None => None,
    };
    sources
        .iter()
        .filter(|source| matches!(source, Source::File(_)) || resolver.is_some())
        .map(|source| {
            let task = run(
                source.clone(),
                settings.interval,
                resolver.clone(),
                fleet.clone(),
                metrics.clone(),
            );
            tokio::spawn(task).abort_handle()
        })
        .collect()
}

fn resolver(settings: &DiscoverySettings) -> Result<TokioResolver, String> {
    let mut builder = match settings.resolver {
        Some(addr) => {
            let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), servers),
                TokioConnectionProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // The interval is the cache: every lookup asks again.
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    Ok(builder.build())
}

async fn run(
    source: Source,
    interval: Duration,
    resolver: Option<Arc<TokioResolver>>,
    fleet: Arc<Fleet>,
    metrics: Arc<Metrics>,
) {
    let label = source.label();
    let name = metrics::Source {
        source: metrics::Name(label.as_str().into()),
    };
    let mut last: Option<Vec<Entry>> = None;
    let mut failing = false;
    loop {
        match lookup(&source, resolver.as_deref()).await {
            Ok(entries) => {
                if failing {
                    tracing::info!(source = %label, backends = entries.len(), "discovery answers again");
                    failing = false;
                }
                metrics
                    .discovery_backends
                    .get_or_create(&name)
                    .set(entries.len() as i64);
                if last.as_ref() != Some(&entries) {
                    tracing::info!(source = %label, backends = entries.len(), "discovered");
                    fleet.set_source(&label, entries.clone());
                    last = Some(entries);
                }
            }
            Err(e) => {
                metrics.discovery_errors.get_or_create(&name).inc();
                if !failing {
                    tracing::warn!(source = %label, error = %e, kept = last.as_ref().map_or(0, Vec::len), "discovery failed; the last known backends are kept");
                    failing = true;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// One lookup of `source`: its backends, sorted, or why there are none.
async fn lookup(source: &Source, resolver: Option<&TokioResolver>) -> Result<Vec<Entry>, String> {
    let dns = || resolver.ok_or_else(|| "no DNS resolver".to_string());
    let mut addrs: Vec<SocketAddr> = match source {
        Source::Dns { name, port, .. } => {
            let resolver = dns()?;
            let ips = resolver
                .lookup_ip(fqdn(name))
                .await
                .map_err(|e| e.to_string())?;
            ips.iter().map(|ip| SocketAddr::new(ip, *port)).collect()
        }
        Source::Srv { name, .. } => {
            let resolver = dns()?;
            let srv = resolver
                .srv_lookup(fqdn(name))
                .await
                .map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for record in srv.iter() {
                let target = record.target().to_ascii();
                // A target that does not resolve fails the whole lookup, so
                // the last known set is kept rather than that backend drained.
                let ips = resolver
                    .lookup_ip(target.as_str())
                    .await
                    .map_err(|e| format!("SRV target {target}: {e}"))?;
                out.extend(ips.iter().map(|ip| SocketAddr::new(ip, record.port())));
            }
            out
        }
        Source::File(path) => {
            let text = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut entries = parse_file(&text)?;
            entries.sort_by(|a, b| a.authority.as_str().cmp(b.authority.as_str()));
            entries.dedup();
            return match entries.is_empty() {
                true => Err("the file names no backend".into()),
                false => Ok(entries),
            };
        }
    };
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err("no addresses".into());
    }
    let protocol = source.protocol();
    Ok(addrs
        .into_iter()
        .map(|a| Entry {
            protocol,
            ..entry(a)
        })
        .collect())
}

/// A backends file: one URL a line; blank lines and `#` comments ignored.
pub fn parse_file(text: &str) -> Result<Vec<Entry>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| parse_http(line).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// Names are looked up as given, not under the search domains (a trailing
/// dot), unless they are single labels like `localhost`.
fn fqdn(name: &str) -> String {
    match name.contains('.') && !name.ends_with('.') {
        true => format!("{name}."),
        false => name.to_owned(),
    }
}

fn entry(addr: SocketAddr) -> Entry {
    let text = match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
    };
    Entry {
        scheme: Scheme::HTTP,
        authority: Authority::try_from(text.as_str()).expect("an address is an authority"),
        drain: false,
        protocol: Protocol::Http1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_refuse() {
        assert_eq!(
            Source::parse("dns://MCP.default.svc.cluster.local:8000"),
            Some(Ok(Source::Dns {
                name: "mcp.default.svc.cluster.local".into(),
                port: 8000,
                protocol: Protocol::Http1,
            }))
        );
        assert_eq!(
            Source::parse("srv://_mcp._tcp.example.com"),
            Some(Ok(Source::Srv {
                name: "_mcp._tcp.example.com".into(),
                protocol: Protocol::Http1,
            }))
        );
        for bad in [
            "dns://name",
            "dns://name:0",
            "dns://na me:80",
            "dns://:80",
            "srv://example.com",
        ] {
            assert!(matches!(Source::parse(bad), Some(Err(_))), "{bad}");
        }
        assert_eq!(Source::parse("http://h:1"), None);
    }

    #[test]
    fn backends_files_take_comments_and_name_bad_lines() {
        let entries = parse_file("# replicas\nhttp://a:1\n\n  http://b:2  # second\n").unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.authority.as_str()).collect();
        assert_eq!(names, ["a:1", "b:2"]);
        let err = parse_file("http://a:1\nftp://b:2\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn addresses_become_identities() {
        assert_eq!(
            entry("10.0.0.7:8000".parse().unwrap()).authority.as_str(),
            "10.0.0.7:8000"
        );
        assert_eq!(
            entry("[::1]:8000".parse().unwrap()).authority.as_str(),
            "[::1]:8000"
        );
    }
}
