//! Failover's own requests to a backend: the client's `initialize` again,
//! `notifications/initialized`, and a `DELETE` for a session it could not
//! finish beginning; each on its own connection, its whole answer read
//! within the response timeout.

use serde::Deserialize;

use super::super::{Proxy, Request};
use crate::downstream::Client;
use crate::error::UpstreamFailure;
use crate::forward::upstream::Response;
use crate::http1::head::FieldKind;
use crate::pool::Backend;

/// Largest answer to a replayed request that is read.
const MAX_ANSWER: usize = 256 * 1024;
/// The JSON-RPC id of the replayed `initialize`.
const INIT_ID: &str = "tether-failover";

/// Why a new session could not be begun on a backend.
pub(super) enum Begin {
    /// Nothing was begun there (it refused the connection, or answered the
    /// `initialize` with no session): the next backend may be tried.
    Next(String),
    /// A session may have been begun and could not be finished (it was
    /// ended again, as far as the backend let it).
    Failed(String),
}

/// What the backend's answer to the `initialize` gave.
pub(super) struct Begun {
    pub(super) id: String,
    pub(super) version: String,
}

/// The fields of the client's request a replayed one does not carry: they
/// describe the client's own body or its own exchange, or are written anew.
const NOT_REPLAYED: &[&[u8]] = &[
    b"accept",
    b"accept-encoding",
    b"last-event-id",
    b"range",
    b"forwarded",
    b"trailer",
    b"te",
    b"upgrade",
];

fn replayed(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    !NOT_REPLAYED.contains(&lower.as_slice())
        && !lower.starts_with(b"content-")
        && !lower.starts_with(b"if-")
}

impl Proxy {
    /// Gives `backend` the client's `initialize` (`init`: its params); the
    /// new session's id and the version it negotiated.
    pub(super) async fn replay_initialize(
        &self,
        client: &Client,
        req: &Request<'_>,
        backend: &Backend,
        init: &[u8],
    ) -> Result<Begun, Begin> {
        let mut body = Vec::with_capacity(init.len() + 80);
        body.extend_from_slice(br#"{"jsonrpc":"2.0","id":""#);
        body.extend_from_slice(INIT_ID.as_bytes());
        body.extend_from_slice(br#"","method":"initialize","params":"#);
        body.extend_from_slice(init);
        body.push(b'}');
        let request = self.replay_head(client, req, backend, b"POST", &body, None);
        let (status, id, answer) = match self.exchange_whole(backend, &request).await {
            Ok(answer) => answer,
            Err(Exchange::Refused) => return Err(Begin::Next("refused the connection".into())),
            // The initialize may have been taken: its session, if any, is unknown.
            Err(Exchange::Failed(why)) => return Err(Begin::Failed(why)),
        };
        match (status, id, negotiated_version(&answer)) {
            (200, Some(id), Some(version)) => Ok(Begun { id, version }),
            (200, Some(id), None) => {
                self.replay_delete(client, req, backend, &id).await;
                Err(Begin::Failed("initialize answered with no result".into()))
            }
            (status, _, _) => Err(Begin::Next(format!(
                "initialize answered {status} with no session"
            ))),
        }
    }

    /// `notifications/initialized` for the session `begun` on `backend`.
    pub(super) async fn replay_initialized(
        &self,
        client: &Client,
        req: &Request<'_>,
        backend: &Backend,
        begun: &Begun,
    ) -> Result<(), String> {
        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let session = Some((begun.id.as_str(), begun.version.as_str()));
        let request = self.replay_head(client, req, backend, b"POST", note, session);
        match self.exchange_whole(backend, &request).await {
            Ok((200..=299, _, _)) => Ok(()),
            Ok((status, _, _)) => Err(format!("notifications/initialized answered {status}")),
            Err(Exchange::Refused) => Err("refused notifications/initialized".into()),
            Err(Exchange::Failed(why)) => Err(why),
        }
    }

    /// Ends a session failover began and could not finish (best effort).
    pub(super) async fn replay_delete(
        &self,
        client: &Client,
        req: &Request<'_>,
        backend: &Backend,
        id: &str,
    ) {
        let session = Some((id, ""));
        let request = self.replay_head(client, req, backend, b"DELETE", b"", session);
        let _ = self.exchange_whole(backend, &request).await;
    }

    /// Sends one of failover's own requests and reads the whole answer:
    /// status, a valid `Mcp-Session-Id`, the body (for an event stream, up
    /// to the event that answers the `initialize`).
    async fn exchange_whole(
        &self,
        backend: &Backend,
        request: &[u8],
    ) -> Result<(u16, Option<String>, Vec<u8>), Exchange> {
        let timeout = self.upstream.response_timeout();
        let work = async {
            let resp = match self.upstream.exchange(backend, request, false).await {
                Ok(resp) => resp,
                Err(e) if e.failure == UpstreamFailure::Refused => return Err(Exchange::Refused),
                Err(e) => {
                    return Err(Exchange::Failed(format!(
                        "{}: {}",
                        e.failure.as_str(),
                        e.detail
                    )))
                }
            };
            let Response {
                mut stream,
                mut buf,
                head,
                ..
            } = resp;
            let id = head
                .fields
                .get(&buf, FieldKind::SessionId)
                .filter(|v| crate::affinity::is_session_id(v))
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned);
            let events = crate::forward::headers::is_event_stream(
                head.fields.get(&buf, FieldKind::ContentType),
            );
            let mut raw = Vec::with_capacity(8 * 1024);
            raw.extend_from_slice(buf.get(head.len..).unwrap_or_default());
            buf.clear();
            let whole = |body: &[u8]| events && answered_event(body).is_some();
            let body = crate::http1::answer::read(&mut stream, &head, raw, MAX_ANSWER, whole)
                .await
                .map_err(|e| Exchange::Failed(e.to_string()))?;
            // The connection is dropped, not pooled: this path is rare.
            Ok((head.status, id, body))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Exchange::Failed(format!("no answer within {timeout:?}"))),
        }
    }

    /// The head (and `body`) of one of failover's own requests: the client's
    /// target and its fields (its credentials among them) but those that
    /// describe its own body or exchange, with the framing, `Content-Type`,
    /// `Accept`, the session's fields and the forwarding fields written here
    /// as the request path writes them.
    fn replay_head(
        &self,
        client: &Client,
        req: &Request<'_>,
        backend: &Backend,
        method: &[u8],
        body: &[u8],
        session: Option<(&str, &str)>,
    ) -> Vec<u8> {
        let buf = client.buf();
        let mut out = Vec::with_capacity(1024 + body.len());
        out.extend_from_slice(method);
        out.push(b' ');
        out.extend_from_slice(req.target.bytes(buf));
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let settings = &req.live.settings;
        let absolute_host = req.head.target_authority().map(|a| &buf[a]);
        let client_host = absolute_host.or_else(|| req.head.fields.get(buf, FieldKind::Host));
        let host = match client_host {
            Some(host) if settings.preserve_host => host,
            _ => backend.authority.as_str().as_bytes(),
        };
        push_field(&mut out, b"host", host);
        for f in &req.head.fields.list {
            let name = &buf[f.name.clone()];
            if f.kind == FieldKind::Other && replayed(name) {
                push_field(&mut out, name, &buf[f.value.clone()]);
            }
        }
        if !body.is_empty() {
            push_field(&mut out, b"content-type", b"application/json");
        }
        push_field(&mut out, b"accept", b"application/json, text/event-stream");
        push_field(&mut out, b"accept-encoding", b"identity");
        if let Some((id, version)) = session {
            push_field(&mut out, b"mcp-session-id", id.as_bytes());
            if !version.is_empty() {
                push_field(&mut out, b"mcp-protocol-version", version.as_bytes());
            }
        }
        crate::forward::headers::forwarded_for(&mut out, buf, req.head, client.peer_ip());
        out.extend_from_slice(b"\r\n");
        let proto: &[u8] = if client.is_tls() { b"https" } else { b"http" };
        push_field(&mut out, b"x-forwarded-proto", proto);
        push_field(
            &mut out,
            b"content-length",
            body.len().to_string().as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }
}

/// How one of failover's exchanges ended, when it gave no answer.
enum Exchange {
    Refused,
    Failed(String),
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The protocol version a server's answer to `initialize` negotiated: from
/// its JSON body, or from the event that carries the answer (a server may
/// send others first, such as an empty priming event).
fn negotiated_version(answer: &[u8]) -> Option<String> {
    match crate::forward::sse::event_end(answer) {
        None => version_in(answer).flatten(),
        Some(_) => answered_event(answer).flatten(),
    }
}

/// In an event stream: `Some` once an event carries the answer to the
/// replayed `initialize` (with the version it negotiated, if a result).
fn answered_event(mut events: &[u8]) -> Option<Option<String>> {
    while let Some(end) = crate::forward::sse::event_end(events) {
        let data = crate::forward::sse::event_data(&events[..end]);
        if let Some(found) = data.as_deref().and_then(version_in) {
            return Some(found);
        }
        events = &events[end..];
    }
    None
}

/// `Some` when `json` is the answer to the replayed `initialize`: the
/// version its result negotiated, or `None` for an error or no version.
fn version_in(json: &[u8]) -> Option<Option<String>> {
    #[derive(Deserialize)]
    struct Answer {
        id: Option<serde_json::Value>,
        result: Option<InitResult>,
    }
    #[derive(Deserialize)]
    struct InitResult {
        #[serde(rename = "protocolVersion")]
        protocol_version: Option<String>,
    }
    let answer = serde_json::from_slice::<Answer>(json).ok()?;
    if answer.id.as_ref().and_then(|id| id.as_str()) != Some(INIT_ID) {
        return None;
    }
    // It goes into a header: a token of visible ASCII.
    let version = answer.result.and_then(|r| r.protocol_version);
    Some(version.filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_negotiated_version_is_read_from_json_or_the_answering_event() {
        let json = br#"{"jsonrpc":"2.0","id":"tether-failover","result":{"protocolVersion":"2025-11-25","capabilities":{}}}"#;
        assert_eq!(negotiated_version(json).as_deref(), Some("2025-11-25"));
        let sse = b"id: 1\r\ndata: \r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"tether-failover\",\"result\":{\"protocolVersion\":\"2025-06-18\"}}\r\n\r\n";
        assert_eq!(negotiated_version(sse).as_deref(), Some("2025-06-18"));
        // The priming event alone is no answer yet.
        assert_eq!(answered_event(b"id: 1\ndata: \n\n"), None);
        assert_eq!(answered_event(&sse[..20]), None);
        assert!(answered_event(sse).is_some());
        for bad in [
            &br#"{"jsonrpc":"2.0","id":"tether-failover","error":{"code":-32600,"message":"no"}}"#
                [..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18"}}"#,
            br#"{"id":"tether-failover","result":{"protocolVersion":"bad version"}}"#,
            b"event: message\n\n",
            b"not json",
            b"",
        ] {
            assert_eq!(
                negotiated_version(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn fields_of_the_clients_own_body_or_exchange_are_not_replayed() {
        for name in [
            &b"Accept-Encoding"[..],
            b"accept",
            b"Content-Encoding",
            b"content-md5",
            b"If-None-Match",
            b"Range",
            b"Last-Event-ID",
            b"Forwarded",
        ] {
            assert!(!replayed(name), "{}", String::from_utf8_lossy(name));
        }
        for name in [
            &b"Authorization"[..],
            b"X-Api-Key",
            b"User-Agent",
            b"Cookie",
        ] {
            assert!(replayed(name), "{}", String::from_utf8_lossy(name));
        }
    }
}
