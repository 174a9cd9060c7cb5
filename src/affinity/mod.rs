//! Stage 3: affinity. Which backend owns this session, and the id swap.
//!
//! Outbound (response), a server's session id is replaced by a sealed token
//! naming its backend; inbound (request), the token is opened and the server's
//! own id put back. Nothing is stored: the client carries the state, so any
//! Tether replica with the key can route any session.
//!
//! This stage never contacts a backend and never picks one for a new session.

pub mod token;

use std::sync::Arc;

use http::header::HeaderValue;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::HeaderMap;

use crate::classify::{Carrier, SessionRef, MCP_SESSION_ID};
use crate::pool::{Backend, Pool};
pub use token::{Sealed, Sealer, SessionKey, TokenError, TokenKind};

/// Why a session reference leads nowhere. Every case is answered 404.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unroutable {
    #[error("invalid token: {0}")]
    Invalid(#[from] TokenError),
    #[error("token issued for the other transport")]
    WrongTransport,
    #[error("owner {0} is no longer in the pool")]
    OwnerGone(String),
}

impl Unroutable {
    /// Label for `tether_invalid_tokens_total`; `None` for an orphaned session.
    pub fn invalid_reason(&self) -> Option<&'static str> {
        match self {
            Unroutable::Invalid(TokenError::Format) => Some("format"),
            Unroutable::Invalid(TokenError::Forged) => Some("forged"),
            Unroutable::Invalid(TokenError::Malformed) => Some("malformed"),
            Unroutable::WrongTransport => Some("wrong_transport"),
            Unroutable::OwnerGone(_) => None,
        }
    }
}

/// A session whose owner is known.
#[derive(Debug)]
pub struct Owned {
    pub backend: Arc<Backend>,
    /// The server's own session id.
    pub upstream_id: String,
    /// The token as the client sent it, to hand back unchanged.
    pub token: String,
}

/// Opens and seals session tokens with one key.
pub struct Affinity {
    sealer: Sealer,
}

impl Affinity {
    pub fn new(key: &SessionKey) -> Self {
        Affinity {
            sealer: Sealer::new(key),
        }
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Finds the owner of the session a request refers to.
    pub fn resolve(&self, session: &SessionRef, pool: &Pool) -> Result<Owned, Unroutable> {
        let sealed = self.sealer.open(&session.token)?;
        let expected = match session.carrier {
            Carrier::Header => TokenKind::Streamable,
            Carrier::Query { .. } => TokenKind::Legacy,
        };
        if sealed.kind != expected {
            return Err(Unroutable::WrongTransport);
        }
        let backend = pool
            .get(&sealed.backend)
            .ok_or(Unroutable::OwnerGone(sealed.backend))?
            .clone();
        Ok(Owned {
            backend,
            upstream_id: sealed.upstream_id,
            token: session.token.clone(),
        })
    }

    /// Puts the server's own session id back where the client put the token.
    pub fn restore(
        &self,
        parts: &mut Parts,
        session: &SessionRef,
        owned: &Owned,
    ) -> Result<(), Unroutable> {
        let malformed = || Unroutable::Invalid(TokenError::Malformed);
        match &session.carrier {
            Carrier::Header => {
                let value = HeaderValue::from_str(&owned.upstream_id).map_err(|_| malformed())?;
                parts.headers.insert(MCP_SESSION_ID.clone(), value);
            }
            Carrier::Query { value } => {
                let path = parts.uri.path();
                let query = parts.uri.query().unwrap_or("");
                let (before, after) = (&query[..value.start], &query[value.end..]);
                let pq = format!("{path}?{before}{}{after}", owned.upstream_id);
                let pq = PathAndQuery::try_from(pq).map_err(|_| malformed())?;
                let mut uri = std::mem::take(&mut parts.uri).into_parts();
                uri.path_and_query = Some(pq);
                parts.uri = http::Uri::from_parts(uri).map_err(|_| malformed())?;
            }
        }
        Ok(())
    }

    /// Replaces a server's `Mcp-Session-Id` on a response by a token.
    ///
    /// Within a known session the client's own token goes back unchanged (the
    /// TypeScript client adopts any id it is shown, so it must never see a new
    /// one mid-session). Returns true when a new session was sealed.
    pub fn seal_response(
        &self,
        headers: &mut HeaderMap,
        backend: &Backend,
        owned: Option<&Owned>,
    ) -> bool {
        let Some(value) = headers.get(&MCP_SESSION_ID) else {
            return false;
        };
        if let Some(owned) = owned {
            if value.as_bytes() == owned.upstream_id.as_bytes() {
                if let Ok(token) = HeaderValue::from_str(&owned.token) {
                    headers.insert(MCP_SESSION_ID.clone(), token);
                }
                return false;
            }
        }
        let Ok(upstream_id) = value.to_str() else {
            tracing::warn!(backend = %backend.id, "backend sent a non-ASCII Mcp-Session-Id; passed unsealed");
            return false;
        };
        let sealed = self
            .sealer
            .seal(TokenKind::Streamable, &backend.id, upstream_id)
            .and_then(|t| HeaderValue::try_from(t).ok());
        match sealed {
            Some(token) => {
                headers.insert(MCP_SESSION_ID.clone(), token);
                true
            }
            None => {
                tracing::warn!(backend = %backend.id, len = upstream_id.len(), "Mcp-Session-Id too long to seal; passed unsealed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
