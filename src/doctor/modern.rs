//! The 2026-07-28 revision: `server/discover`, which every server of that
//! revision MUST implement, POSTed with the headers the revision wants
//! (`MCP-Protocol-Version`, `Mcp-Method`) and the `_meta` envelope.

use http::Method;
use serde_json::{json, Value};
use url::Url;

use super::client::{clip, Client, ClientError};
use super::{Check, Verdict};

pub const MODERN: &str = "2026-07-28";
pub const ACCEPT: &str = "application/json, text/event-stream";

/// What `server/discover` got.
#[derive(Debug)]
pub struct Discover {
    pub status: u16,
    /// `result.supportedVersions`, when the answer was a discover result.
    pub versions: Option<Vec<String>>,
    pub saw: String,
}

/// The `_meta` every 2026-07-28 request carries.
pub fn envelope() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "tether-doctor", "version": env!("CARGO_PKG_VERSION")},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

pub async fn probe(client: &Client, url: &Url) -> Result<Discover, ClientError> {
    let id = json!("doctor-discover");
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "server/discover",
                      "params": {"_meta": envelope()}});
    let answer = client
        .send(
            Method::POST,
            url,
            &[
                ("accept", ACCEPT),
                ("content-type", "application/json"),
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "server/discover"),
            ],
            Some(body.to_string().into_bytes()),
        )
        .await?;
    let status = answer.status.as_u16();
    if !answer.status.is_success() {
        let text = answer.text().await.unwrap_or_default();
        return Ok(Discover {
            status,
            versions: None,
            saw: format!("server/discover: {status} {}", clip(&text)),
        });
    }
    let message = match answer.jsonrpc(&id).await {
        Ok((m, _)) => m,
        Err(e) => {
            return Ok(Discover {
                status,
                versions: None,
                saw: format!("server/discover: {status}, then {e}"),
            })
        }
    };
    let versions = message
        .pointer("/result/supportedVersions")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .take(50)
                .map(clip)
                .collect::<Vec<_>>()
        });
    let saw = match (&versions, message.get("error")) {
        (Some(v), _) => format!("server/discover: {status}, versions {}", v.join(", ")),
        (None, Some(err)) => format!(
            "server/discover: {status}, error {}",
            clip(&err.to_string())
        ),
        (None, None) => format!(
            "server/discover: {status}, no supportedVersions in {}",
            clip(&message.to_string())
        ),
    };
    Ok(Discover {
        status,
        versions,
        saw,
    })
}

pub fn verdict(probe: &Result<Discover, ClientError>) -> Check {
    match probe {
        Ok(d) => match &d.versions {
            Some(v) => Check::new("era.modern", Verdict::Pass, d.saw.clone())
                .with(json!({"status": d.status, "versions": v})),
            None => Check::new(
                "era.modern",
                Verdict::NotApplicable,
                format!("not served ({})", d.saw),
            )
            .with(json!({"status": d.status})),
        },
        Err(e) => Check::new(
            "era.modern",
            Verdict::NotApplicable,
            format!("server/discover: {e}"),
        ),
    }
}
