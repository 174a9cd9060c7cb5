//! `tether demo`: three in-process demo MCP replicas (both transports) behind
//! Tether, and a short tour that shows sessions sticking while new ones spread.
//!
//! The replicas are the test kit's (`mcp-tether-testkit`), so the demo shows
//! exactly what the integration tests check.

use std::collections::BTreeSet;

use anyhow::Context as _;
use mcp_tether_testkit::{LegacyClient, Replica, StreamableClient};

use crate::cli::DemoArgs;
use crate::config::{Config, FileConfig, Overrides};

/// Calls per session in the tour.
const CALLS: usize = 3;

/// What one tour session saw.
#[derive(Debug)]
pub struct TourSession {
    pub transport: &'static str,
    /// The token the client was given, shortened.
    pub token_head: String,
    /// The replica that answered each call, in order.
    pub replicas: Vec<String>,
}

impl TourSession {
    pub fn sticky(&self) -> bool {
        self.replicas.windows(2).all(|w| w[0] == w[1])
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut replicas = Vec::new();
    for i in 1..=3 {
        let replica = Replica::builder(&format!("replica-{i}"))
            .spawn()
            .await
            .context("starting a demo replica")?;
        replicas.push(replica);
    }
    let overrides = Overrides {
        listen: Some(args.listen),
        admin: Some(args.admin),
        backends: replicas.iter().map(Replica::url).collect(),
        ..Overrides::default()
    };
    let config = Config::from_parts(FileConfig::default(), overrides, &|_| None)?;
    let running = crate::start(config).await.with_context(|| {
        format!(
            "cannot listen on {} (try --listen 127.0.0.1:0)",
            args.listen
        )
    })?;
    let base = format!("http://{}", running.proxy_addr);

    println!("Tether demo: 3 MCP replicas behind Tether\n");
    println!("  Streamable HTTP:  {base}/mcp");
    println!("  Legacy HTTP+SSE:  {base}/sse");
    if let Some(admin) = running.admin_addr {
        println!("  Metrics:          http://{admin}/metrics");
    }
    for r in &replicas {
        println!("  {}:        {}", r.name(), r.url());
    }
    println!("\nTour: each session calls the `whoami` tool {CALLS} times.");
    let sessions = tour(&base).await?;
    for s in &sessions {
        println!(
            "  {:<10} session {}  ->  {}",
            s.transport,
            s.token_head,
            s.replicas.join(", ")
        );
    }
    let spread: BTreeSet<&String> = sessions.iter().filter_map(|s| s.replicas.first()).collect();
    let sticky = sessions.iter().all(TourSession::sticky);
    println!(
        "\n{} sessions: {}; spread over {} replicas.",
        sessions.len(),
        if sticky {
            "every one stayed on its replica"
        } else {
            "SOME MOVED (bug)"
        },
        spread.len()
    );
    if !sticky {
        anyhow::bail!("a demo session changed replica");
    }
    if args.once {
        running.shutdown().await;
        return Ok(());
    }
    println!(
        "\nServing until Ctrl-C. Point an MCP client (e.g. the MCP Inspector) at the URLs above."
    );
    let _ = tokio::signal::ctrl_c().await;
    running.shutdown().await;
    Ok(())
}

/// Opens three Streamable HTTP and two legacy sessions through `base` and
/// records which replica answered each call.
pub async fn tour(base: &str) -> anyhow::Result<Vec<TourSession>> {
    let mut out = Vec::new();
    for _ in 0..3 {
        let client = StreamableClient::connect(&format!("{base}/mcp")).await?;
        let mut replicas = Vec::new();
        for _ in 0..CALLS {
            replicas.push(client.whoami().await?);
        }
        out.push(TourSession {
            transport: "streamable",
            token_head: head(client.session_id().unwrap_or("-")),
            replicas,
        });
    }
    for _ in 0..2 {
        let mut client = LegacyClient::connect(&format!("{base}/sse")).await?;
        let mut replicas = Vec::new();
        for _ in 0..CALLS {
            replicas.push(client.whoami().await?);
        }
        let token = client
            .endpoint()
            .split_once("essionId=")
            .or_else(|| client.endpoint().split_once("ession_id="))
            .map_or("-", |(_, t)| t);
        out.push(TourSession {
            transport: "legacy",
            token_head: head(token),
            replicas,
        });
    }
    Ok(out)
}

/// A token shown short: its format and its last characters (the first
/// ones after the format name the key, the same for every token).
fn head(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    match chars.len() {
        n if n > 16 => {
            let (start, end): (String, String) =
                (chars[..3].iter().collect(), chars[n - 8..].iter().collect());
            format!("{start}…{end}")
        }
        _ => token.to_owned(),
    }
}
