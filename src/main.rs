//! The `tether` binary: parse the command line, build the config, run the library.

use std::process::ExitCode;

use clap::Parser;
use mcp_tether::cli::{Cli, Command};
use mcp_tether::config::{Config, KeyOrigin, LogFormat};
use mcp_tether::control::ReloadSource;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = |name: &str| std::env::var(name).ok();
    match cli.command {
        Some(Command::Check(args)) => {
            init_logging(LogFormat::Text);
            let Some(path) = args.config.as_deref() else {
                eprintln!("tether: config error: check: give the file with --config FILE");
                return ExitCode::from(2);
            };
            return match Config::load(Some(path), args.overrides(), &env) {
                Ok(config) => {
                    print!("{}", config.to_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tether: config error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Doctor(args)) => return mcp_tether::doctor::main(args),
        Some(Command::Keygen) | Some(Command::Demo(_)) => init_logging(LogFormat::Text),
        None => {}
    }
    match cli.command {
        Some(Command::Keygen) => {
            println!(
                "{}",
                mcp_tether::affinity::SessionKey::generate().to_base64()
            );
            ExitCode::SUCCESS
        }
        #[cfg(feature = "demo")]
        Some(Command::Demo(args)) => block_on(None, mcp_tether::demo::run(args)),
        #[cfg(not(feature = "demo"))]
        Some(Command::Demo(_)) => {
            eprintln!("tether: this build has no demo (built without the \"demo\" feature)");
            ExitCode::FAILURE
        }
        Some(Command::Check(_)) | Some(Command::Doctor(_)) => unreachable!("answered above"),
        None => {
            let config = match Config::load(cli.run.config.as_deref(), cli.run.overrides(), &env) {
                Ok(config) => config,
                Err(e) => {
                    init_logging(LogFormat::Text);
                    eprintln!("tether: config error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(config.log.format);
            let source = cli.run.config.clone().map(|path| ReloadSource {
                path,
                overrides: cli.run.overrides(),
                env: Box::new(env),
            });
            block_on(config.threads, serve(config, source))
        }
    }
}

async fn serve(config: Config, source: Option<ReloadSource>) -> anyhow::Result<()> {
    if config.key_origin == KeyOrigin::Generated {
        tracing::warn!(
            "no session key configured: using a random one; sessions will not survive a restart \
             or span Tether replicas (set --session-key-file or TETHER_SESSION_KEY; see `tether keygen`)"
        );
    }
    let pools = config.pools.len();
    let backends: usize = config.pools.iter().map(|p| p.backends.len()).sum();
    let sources: usize = config.pools.iter().map(|p| p.sources.len()).sum();
    let tls = config.tls.is_some();
    let running = mcp_tether::start_with(config, source).await?;
    println!("tether: proxy listening on {}", running.proxy_addr);
    if let Some(admin) = running.admin_addr {
        println!("tether: admin listening on {admin}");
    }
    tracing::info!(addr = %running.proxy_addr, tls, pools, backends, sources, "tether started");
    running.serve_signals().await?;
    tracing::info!("tether stopped");
    Ok(())
}

/// Runs `fut` on a runtime with `threads` workers (default: one per CPU this
/// process may run on). One thread is a current-thread runtime: everything on
/// the calling thread, no work-stealing queues or cross-thread wakeups: on one
/// pinned core it measured 0.75x the CPU per request of a multi-thread
/// runtime with one worker (docs/benchmarks.md). More threads: multi-thread.
fn block_on(
    threads: Option<usize>,
    fut: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        // A worker going idle leaves its spare buffers where they can be
        // freed (one thread: the memory task does it on that thread).
        b.on_thread_park(mcp_tether::http1::buf::spill);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TETHER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}
