//! The MCP server behind both transports: JSON-RPC methods and the three test tools.
//!
//! Transport-free: it takes one parsed message and returns the response to send, if any. It never
//! panics on a malformed message; those get a JSON-RPC error.

use std::time::Duration;

use serde_json::{json, Value};

const DEFAULT_PROTOCOL_VERSION: &str = "2025-06-18";

/// The response to one client message; `None` for notifications and client responses.
pub(crate) async fn handle_message(server_name: &str, message: &Value) -> Option<Value> {
    let Some(object) = message.as_object() else {
        return Some(error(&Value::Null, -32600, "Invalid Request"));
    };
    let method = object.get("method").and_then(Value::as_str);
    let id = object.get("id");
    let (Some(method), Some(id)) = (method, id) else {
        // A notification (no id) or a response to a server request (no method).
        return None;
    };
    let params = object.get("params").unwrap_or(&Value::Null);
    let outcome = match method {
        "initialize" => Ok(initialize(server_name, params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(tools_list()),
        "tools/call" => tools_call(server_name, params).await,
        _ => Err((-32601, format!("Method not found: {method}"))),
    };
    Some(match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => error(id, code, &message),
    })
}

/// Whether this message is an `initialize` request.
pub(crate) fn is_initialize(message: &Value) -> bool {
    message.get("method").and_then(Value::as_str) == Some("initialize")
}

fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn initialize(server_name: &str, params: &Value) -> Value {
    let version = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_PROTOCOL_VERSION);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": {"name": server_name, "version": "0.1.0"},
    })
}

fn tools_list() -> Value {
    json!({"tools": [
        {
            "name": "whoami",
            "description": "Returns the name of the replica that answered.",
            "inputSchema": {"type": "object", "properties": {}},
        },
        {
            "name": "echo",
            "description": "Returns its arguments as JSON text.",
            "inputSchema": {"type": "object"},
        },
        {
            "name": "sleep",
            "description": "Waits `ms` milliseconds, then answers.",
            "inputSchema": {
                "type": "object",
                "properties": {"ms": {"type": "integer", "minimum": 0}},
                "required": ["ms"],
            },
        },
    ]})
}

async fn tools_call(server_name: &str, params: &Value) -> Result<Value, (i64, String)> {
    let arguments = params
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    match params.get("name").and_then(Value::as_str) {
        Some("whoami") => Ok(text_content(server_name)),
        Some("echo") => Ok(text_content(&arguments.to_string())),
        Some("sleep") => {
            let Some(ms) = arguments.get("ms").and_then(Value::as_u64) else {
                return Err((-32602, "sleep needs arguments {\"ms\": N}".to_owned()));
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(text_content(&format!("slept {ms} ms")))
        }
        Some(other) => Err((-32602, format!("Unknown tool: {other}"))),
        None => Err((-32602, "tools/call needs params.name".to_owned())),
    }
}

fn text_content(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}
