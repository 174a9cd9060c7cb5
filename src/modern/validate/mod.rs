//! Header validation (2026-07-28, "Server Validation of Headers"): the
//! routing headers must say what the body says, so nobody routes (or
//! enforces policy) on a header the body contradicts.
//!
//! - `MCP-Protocol-Version` on every POST, equal to the body's
//!   `params._meta["io.modelcontextprotocol/protocolVersion"]` when the body
//!   carries one;
//! - `Mcp-Method` on every request, equal to `method` (on a notification,
//!   for which the revision defines no header rules, checked when given);
//! - `Mcp-Name` for `tools/call` and `prompts/get` (`params.name`) and
//!   `resources/read` (`params.uri`); for the task methods (`params.taskId`)
//!   checked when given. SEP-2663 says a client MUST send it there, but the
//!   real one (fastmcp-tasks 4.1.4) does not, and the real server checks it
//!   only when present: Tether does as the server does, and routes a task
//!   request by its body.
//!
//! Values are decoded (`header::decode`) before they are compared; a JSON
//! number in the body is compared as a number. The body is parsed once,
//! with borrowed strings where it has no escapes.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::META_VERSION;

/// The parts of a JSON-RPC message the headers mirror.
#[derive(Debug, Default, Deserialize)]
pub struct Message<'a> {
    /// Present on requests (and responses), absent on notifications; an
    /// `"id": null` is present.
    #[serde(default, deserialize_with = "present")]
    pub id: Option<Value>,
    #[serde(borrow, default)]
    pub method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub params: Option<Params<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Params<'a> {
    #[serde(default)]
    pub name: Option<Value>,
    #[serde(default)]
    pub uri: Option<Value>,
    #[serde(rename = "taskId", default)]
    pub task_id: Option<Value>,
    #[serde(rename = "_meta", borrow, default)]
    pub meta: Option<Meta<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Meta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow, default)]
    pub version: Option<Cow<'a, str>>,
}

/// `Some` for any value, `null` included (serde gives `None` for an absent
/// member through `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The request's routing headers, decoded; `None`: absent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Headers<'a> {
    pub version: Option<&'a [u8]>,
    pub method: Option<&'a [u8]>,
    pub name: Option<&'a [u8]>,
}

/// Which `params` member `Mcp-Name` mirrors for a method, if any.
pub fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        m if is_task_method(m) => Some("taskId"),
        _ => None,
    }
}

/// The methods that name an existing task (SEP-2663), routed to its owner.
pub fn is_task_method(method: &str) -> bool {
    matches!(
        method,
        "tasks/get" | "tasks/update" | "tasks/cancel" | "tasks/result"
    )
}

impl Params<'_> {
    fn member(&self, name: &str) -> Option<&Value> {
        match name {
            "name" => self.name.as_ref(),
            "uri" => self.uri.as_ref(),
            _ => self.task_id.as_ref(),
        }
    }
}

/// Parses `body` and checks `headers` against it.
pub fn check<'b>(headers: &Headers<'_>, body: &'b [u8]) -> Result<Message<'b>, String> {
    if headers.name.is_some() && headers.method.is_none() {
        return Err("Mcp-Name given without Mcp-Method".into());
    }
    let message: Message<'b> = match serde_json::from_slice(body) {
        Ok(m) => m,
        // A body Tether cannot read (not JSON, not one object, two members
        // of one name, or JSON a server's parser reads and serde's refuses:
        // a lone surrogate, NaN, deep nesting) cannot be shown to agree
        // with a header: with one, a mismatch. With none, the server
        // answers it (but an ambiguous structure is refused).
        Err(e) if headers.method.is_some() || e.is_data() => {
            return Err(format!(
                "the body cannot be checked against the headers: {e}"
            ))
        }
        Err(_) => return Ok(Message::default()),
    };
    let Some(version) = headers.version else {
        return Err("MCP-Protocol-Version is missing".into());
    };
    let meta_version = message
        .params
        .as_ref()
        .and_then(|p| p.meta.as_ref())
        .and_then(|m| m.version.as_deref());
    if let Some(meta) = meta_version {
        if meta.as_bytes() != version {
            return Err(format!(
                "MCP-Protocol-Version is not the body's _meta {META_VERSION}"
            ));
        }
    }
    let Some(method) = message.method.as_deref() else {
        // A response or error the client sends back: no method to mirror.
        return match headers.method {
            Some(_) => Err("Mcp-Method given, but the body has no method".into()),
            None => Ok(message),
        };
    };
    match headers.method {
        None if message.id.is_none() => return Ok(message),
        None => return Err("Mcp-Method is missing".into()),
        Some(m) if m != method.as_bytes() => {
            return Err("Mcp-Method is not the body's method".into())
        }
        Some(_) => {}
    }
    let Some(member) = name_param(method) else {
        return match headers.name {
            Some(_) => Err(format!("Mcp-Name given, but {method} names nothing")),
            None => Ok(message),
        };
    };
    {
        let value = message.params.as_ref().and_then(|p| p.member(member));
        match (headers.name, value) {
            (None, _) if is_task_method(method) => {}
            (None, _) => {
                return Err(format!(
                    "Mcp-Name is missing ({method} needs params.{member})"
                ))
            }
            (Some(_), None) => {
                return Err(format!(
                    "Mcp-Name given, but the body has no params.{member}"
                ))
            }
            (Some(name), Some(value)) if !same_value(name, value) => {
                return Err(format!("Mcp-Name is not the body's params.{member}"))
            }
            _ => {}
        }
    }
    Ok(message)
}

/// A header value against a JSON value: strings byte for byte, numbers as
/// numbers (`7` and `7.0` agree), nothing else.
pub fn same_value(header: &[u8], value: &Value) -> bool {
    match value {
        Value::String(s) => s.as_bytes() == header,
        Value::Number(n) => {
            let Ok(text) = std::str::from_utf8(header) else {
                return false;
            };
            match (n.as_i64(), text.parse::<i64>()) {
                (Some(a), Ok(b)) => a == b,
                _ => match (n.as_f64(), text.parse::<f64>()) {
                    (Some(a), Ok(b)) => a == b,
                    _ => false,
                },
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
