//! The command line. `main.rs` parses it and calls the library; the flags map
//! onto `config::Overrides` here so the mapping is tested with the config.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{LogFormat, Overrides};

/// Tether: a session-sticky load balancer for MCP servers.
#[derive(Debug, Parser)]
#[command(name = "tether", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a fresh base64 session key (for --session-key-file or TETHER_SESSION_KEY).
    Keygen,
    /// Start three demo MCP replicas behind Tether and show sessions sticking.
    Demo(DemoArgs),
    /// Validate a config (--config FILE, with any flags the proxy would get) and print it
    /// as it would be in force; exit 0, or 2 with the one-line error.
    Check(Box<RunArgs>),
    /// Probe any MCP endpoint as a real client would (eras, stickiness, unknown sessions,
    /// SSE through the path, Origin, protocol version) and print a verdict per check;
    /// exit 0 if every check that applies passes, 1 if one fails, 2 if the URL is unusable.
    Doctor(DoctorArgs),
}

/// Running the proxy (the default command).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file; flags override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Proxy listen address [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Backend replica URL (http://host:port); repeat for each. Replaces the file's list.
    #[arg(long = "backend", value_name = "URL")]
    pub backends: Vec<String>,
    /// Admin listen address for /healthz and /metrics [default: none].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// File holding the base64 32-byte session keys, one a line: the first seals, all open
    /// (overrides TETHER_SESSION_KEY).
    #[arg(long, value_name = "FILE")]
    pub session_key_file: Option<PathBuf>,
    /// Where sessions are kept (sessions.store): sealed (in the ids the clients carry),
    /// memory (a table in this process), or a redis:// or rediss:// URL [default: sealed].
    /// TETHER_SESSION_STORE does the same, out of the process list (a URL's password).
    #[arg(
        long,
        value_name = "STORE",
        env = "TETHER_SESSION_STORE",
        hide_env_values = true
    )]
    pub session_store: Option<String>,
    /// Threads serving traffic; 1 runs everything on one thread (overrides TETHER_THREADS)
    /// [default: one per CPU Tether may run on].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// A file of backend URLs, one a line, watched for changes (discovery.file).
    #[arg(long, value_name = "PATH")]
    pub backends_file: Option<PathBuf>,
    /// How often dns:// and srv:// backends and the backends file are looked up again
    /// (discovery.interval) [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub discovery_interval: Option<std::time::Duration>,
    /// DNS server IP:PORT for dns:// and srv:// backends (discovery.resolver)
    /// [default: the system's].
    #[arg(long, value_name = "IP:PORT")]
    pub resolver: Option<SocketAddr>,
    /// Log lines as text or JSON (log.format) [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Serve TLS on the proxy listener with this certificate (PEM, full chain) (tls.cert).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert (tls.key).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that https:// backends are verified against, instead of
    /// the system's (tls.backend_ca).
    #[arg(long, value_name = "FILE")]
    pub backend_ca: Option<PathBuf>,
}

impl RunArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            admin: self.admin,
            backends: self.backends.clone(),
            session_key_file: self.session_key_file.clone(),
            session_store: self.session_store.clone(),
            threads: self.threads,
            backends_file: self.backends_file.clone(),
            discovery_interval: self.discovery_interval,
            resolver: self.resolver,
            log_format: self.log_format,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            backend_ca: self.backend_ca.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where Tether listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the admin listener (/metrics) listens.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    /// Exit after the guided tour instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

/// `tether doctor URL`: see docs/doctor.md.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The MCP endpoint, as a client is given it (http:// or https://, e.g. http://host/mcp).
    #[arg(value_name = "URL")]
    pub url: String,
    /// Sessions opened at once for the stickiness checks.
    #[arg(long, value_name = "N", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sessions: u32,
    /// Calls each session makes once every session is open.
    #[arg(long, value_name = "M", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub calls: u32,
    /// How long an idle SSE stream is held open to see whether the path cuts it
    /// (proxies' classic 60 s timeout); 0 skips the idle check.
    #[arg(long, value_name = "DURATION", default_value = "70s", value_parser = humantime::parse_duration)]
    pub hold: std::time::Duration,
    /// Another path to try for a legacy HTTP+SSE stream, besides the URL itself and /sse (repeatable).
    #[arg(long = "sse-path", value_name = "PATH")]
    pub sse_paths: Vec<String>,
    /// A header sent on every request, e.g. 'Authorization: Bearer ...' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Print the report as JSON (for machines) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The longest any one step may take (connect, an answer, an event).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}
