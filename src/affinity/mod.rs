//! Stage 3: affinity. Which backend owns this session, and the id swap.
//!
//! Outbound (response), a server's session id is replaced by a sealed token
//! naming its backend; inbound (request), the token is opened and the server's
//! own id put back. Nothing is stored: the client carries the state, so any
//! Tether replica with the key can route any session.
//!
//! This stage never contacts a backend and never picks one for a new session.

mod cache;
pub mod token;

use std::sync::Arc;

use crate::classify::{Carrier, SessionRef};
use crate::pool::Backend;
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
    /// Two session references, or one servers may read differently.
    #[error("ambiguous session reference")]
    Ambiguous,
}

impl Unroutable {
    /// Label for `tether_invalid_tokens_total`; `None` for an orphaned session.
    pub fn invalid_reason(&self) -> Option<&'static str> {
        match self {
            Unroutable::Invalid(TokenError::Format) => Some("format"),
            Unroutable::Invalid(TokenError::Forged) => Some("forged"),
            Unroutable::Invalid(TokenError::Malformed) => Some("malformed"),
            Unroutable::WrongTransport => Some("wrong_transport"),
            Unroutable::Ambiguous => Some("ambiguous"),
            Unroutable::OwnerGone(_) => None,
        }
    }
}

/// A session whose owner is known.
#[derive(Debug)]
pub struct Owned {
    pub backend: Arc<Backend>,
    sealed: Sealed,
}

impl Owned {
    /// The server's own session id.
    pub fn upstream_id(&self) -> &str {
        self.sealed.upstream_id()
    }

    /// The same, as bytes (no UTF-8 check again on the request path).
    pub fn upstream_id_bytes(&self) -> &[u8] {
        self.sealed.upstream_id_bytes()
    }
}

/// Seals session tokens with one key; opens them with it, or with the key
/// in force before the last reload (so changing the key by a reload does not
/// orphan the sessions sealed with the old one).
pub struct Affinity {
    sealer: Sealer,
    previous: Option<Sealer>,
}

impl Affinity {
    pub fn new(key: &SessionKey) -> Self {
        Affinity {
            sealer: Sealer::new(key),
            previous: None,
        }
    }

    /// Seals with `key`, and still opens what `previous` sealed.
    pub fn with_previous(key: &SessionKey, previous: &SessionKey) -> Self {
        Affinity {
            sealer: Sealer::new(key),
            previous: (!key.same_as(previous)).then(|| Sealer::new(previous)),
        }
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Opens `token`, from this thread's recently opened tokens if it is
    /// there (`cache` says why that is as safe as opening it again).
    pub fn open(&self, token: &[u8]) -> Result<Sealed, TokenError> {
        if let Some(sealed) = cache::get(self.sealer.id(), token) {
            return Ok(sealed);
        }
        let text = std::str::from_utf8(token).map_err(|_| TokenError::Format)?;
        let sealed = match (self.sealer.open(text), &self.previous) {
            (Err(TokenError::Forged), Some(previous)) => previous.open(text)?,
            (opened, _) => opened?,
        };
        cache::put(self.sealer.id(), token, &sealed);
        Ok(sealed)
    }

    /// Finds the owner of the session `token` (the reference's text) names;
    /// `find` looks a backend up by identity.
    pub fn resolve(
        &self,
        token: &[u8],
        session: &SessionRef,
        find: impl FnOnce(&[u8]) -> Option<Arc<Backend>>,
    ) -> Result<Owned, Unroutable> {
        let sealed = self.open(token)?;
        let expected = match session.carrier {
            Carrier::Header => TokenKind::Streamable,
            Carrier::Query { .. } => TokenKind::Legacy,
        };
        if sealed.kind != expected {
            return Err(Unroutable::WrongTransport);
        }
        let backend = find(sealed.backend_bytes())
            .ok_or_else(|| Unroutable::OwnerGone(sealed.backend().to_owned()))?;
        Ok(Owned { backend, sealed })
    }

    /// Where the server's own session id goes instead of the client's token.
    /// `target` is the origin-form target the session was found in.
    pub fn restore(
        &self,
        target: &str,
        session: &SessionRef,
        owned: &Owned,
    ) -> Result<Restored, Unroutable> {
        let malformed = Unroutable::Invalid(TokenError::Malformed);
        match &session.carrier {
            Carrier::Header if is_session_id(owned.upstream_id_bytes()) => Ok(Restored::Header),
            Carrier::Header => Err(malformed),
            Carrier::Query { value } => {
                // The id goes back as the server wrote it in its endpoint URL
                // (still percent-encoded); it must not end the parameter.
                let id = owned.upstream_id();
                let fits = id
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'#' | b'&' | b';'));
                let (Some(before), Some(after)) =
                    (target.get(..value.start), target.get(value.end..))
                else {
                    return Err(malformed);
                };
                if !fits {
                    return Err(malformed);
                }
                Ok(Restored::Target(format!("{before}{id}{after}")))
            }
        }
    }

    /// What goes back to the client in place of a server's `Mcp-Session-Id`.
    ///
    /// Within a known session the client's own token goes back unchanged (the
    /// TypeScript client adopts any id it is shown, so it must never see a new
    /// one mid-session). A new id is sealed; one that cannot be (not a session
    /// id, too long) passes as it is, with a warning.
    pub fn seal_response(
        &self,
        value: &[u8],
        backend: &Backend,
        owned: Option<&Owned>,
    ) -> ResponseId {
        if owned.is_some_and(|owned| value == owned.upstream_id_bytes()) {
            return ResponseId::Same;
        }
        // The spec's session id: visible ASCII (0x21-0x7E), so never empty.
        // Anything else is not sealed (nor counted as a session): it passes
        // as the server sent it, and comes back to a 404.
        let upstream_id = match std::str::from_utf8(value) {
            Ok(id) if is_session_id(value) => id,
            _ => {
                tracing::warn!(backend = %backend.id, len = value.len(), "backend sent an invalid Mcp-Session-Id (empty or not visible ASCII); passed unsealed");
                return ResponseId::Invalid;
            }
        };
        match self
            .sealer
            .seal(TokenKind::Streamable, &backend.id, upstream_id)
        {
            Some(token) => ResponseId::New(token),
            None => {
                tracing::warn!(backend = %backend.id, len = upstream_id.len(), "Mcp-Session-Id too long to seal; passed unsealed");
                ResponseId::Unsealed
            }
        }
    }
}

/// How the server's id is put back on the way in.
#[derive(Debug, PartialEq, Eq)]
pub enum Restored {
    /// `Mcp-Session-Id` carries `Owned::upstream_id`.
    Header,
    /// The request target with the query parameter's value replaced.
    Target(String),
}

/// The `Mcp-Session-Id` a response carries to the client.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseId {
    /// The session's own token, as the client sent it (the server echoed
    /// the id it was sent).
    Same,
    /// A new session: its token.
    New(String),
    /// Passed as the server sent it: too long to seal.
    Unsealed,
    /// Passed as the server sent it: not a valid session id.
    Invalid,
}

/// A session id as the spec defines it: one or more visible ASCII characters.
pub fn is_session_id(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(u8::is_ascii_graphic)
}

#[cfg(test)]
mod tests;
