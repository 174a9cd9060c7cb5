//! Stage 3: affinity. Which backend owns this session, and the id swap.
//!
//! Outbound (response), a server's session id is replaced by a sealed token
//! naming its backend; inbound (request), the token is opened and the server's
//! own id put back. Nothing is stored: the client carries the state, so any
//! Tether replica with the key can route any session. A session may also be
//! bound to its caller: a keyed hash of the principal (`trust::principal`)
//! is sealed in with the owner, and a request of someone else gets 404.
//!
//! This stage never contacts a backend and never picks one for a new session.

mod cache;
mod keys;
pub mod store;
pub mod token;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use crate::classify::{Carrier, SessionRef};
use crate::pool::Backend;
use keys::Keys;
pub use keys::MAX_KEYS;
pub use token::{PrincipalTag, Sealed, Sealer, SessionKey, TokenError, TokenKind};

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
    /// An id the session store does not know.
    #[error("no such session in the store")]
    NotStored,
    /// The session is bound to a caller, and this request is not theirs.
    #[error("session bound to another caller ({})", .0.as_str())]
    NotTheCaller(Binding),
}

/// Who a request is from, as far as binding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    /// Binding is off (`bind = "none"`): tokens are not checked, and what
    /// is sealed is bound to no one.
    Unchecked,
    /// The request's principal (`trust::principal`).
    Given(&'a [u8]),
    /// Binding is on and the request has none.
    Absent,
}

/// How a request failed its session's binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Its principal is another.
    Mismatch,
    /// It has none.
    Missing,
}

impl Binding {
    /// Label for `tether_session_binding_rejections_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::Mismatch => "mismatch",
            Binding::Missing => "missing",
        }
    }
}

impl Unroutable {
    /// Label for `tether_invalid_tokens_total`; `None` for an orphaned
    /// session or a binding failure (counted apart).
    pub fn invalid_reason(&self) -> Option<&'static str> {
        match self {
            Unroutable::Invalid(TokenError::Format) => Some("format"),
            Unroutable::Invalid(TokenError::Forged) => Some("forged"),
            Unroutable::Invalid(TokenError::Malformed) => Some("malformed"),
            Unroutable::Invalid(TokenError::UnknownKey) => Some("unknown_key"),
            Unroutable::WrongTransport => Some("wrong_transport"),
            Unroutable::Ambiguous => Some("ambiguous"),
            Unroutable::NotStored => Some("not_stored"),
            Unroutable::OwnerGone(_) | Unroutable::NotTheCaller(_) => None,
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
    /// What its token says.
    pub fn sealed(&self) -> &Sealed {
        &self.sealed
    }

    /// The server's own session id.
    pub fn upstream_id(&self) -> &str {
        self.sealed.upstream_id()
    }

    /// The same, as bytes (no UTF-8 check again on the request path).
    pub fn upstream_id_bytes(&self) -> &[u8] {
        self.sealed.upstream_id_bytes()
    }
}

/// Seals session tokens with the first key in force and opens them with
/// any (`keys`). The keys in force are exactly those configured: a reload
/// that drops a key retires its tokens (`docs/config.md`, "Session keys", tells
/// the rollout that loses no session).
pub struct Affinity {
    keys: Keys,
}

impl Affinity {
    /// Keys with no open counts (tests, tools).
    pub fn new(keys: &[SessionKey]) -> Self {
        Affinity::counted(keys, |_| Default::default())
    }

    /// Keys whose opens are counted by `opens` (one counter per key).
    pub fn counted(keys: &[SessionKey], opens: impl Fn(&SessionKey) -> Counter) -> Self {
        Affinity {
            keys: Keys::new(keys, opens),
        }
    }

    /// The sealing key's sealer.
    pub fn sealer(&self) -> &Sealer {
        self.keys.sealer()
    }

    /// The tag that binds a new session to `principal` (under the sealing key).
    pub fn principal_tag(&self, principal: &[u8]) -> PrincipalTag {
        self.keys.sealer().principal_tag(principal)
    }

    /// Opens `token` under any key in force.
    pub fn open(&self, token: &[u8]) -> Result<Sealed, TokenError> {
        self.keys.open(token)
    }

    /// Whether a request from `principal` may use what `sealed` names: a
    /// bound token needs the same principal; an unbound one (begun with no
    /// principal, or before binding was turned on) takes any, and with
    /// binding off nothing is checked.
    pub fn check_caller(&self, sealed: &Sealed, principal: Principal<'_>) -> Result<(), Binding> {
        let Some(bound) = sealed.principal() else {
            return Ok(());
        };
        let principal = match principal {
            Principal::Unchecked => return Ok(()),
            Principal::Absent => return Err(Binding::Missing),
            Principal::Given(p) => p,
        };
        match token::same_tag(bound, &self.keys.tag_for(sealed, principal)) {
            true => Ok(()),
            false => Err(Binding::Mismatch),
        }
    }

    /// Finds the owner of the session `token` (the reference's text) names,
    /// for a request whose caller is `principal`; `find` looks a backend up
    /// by identity.
    pub fn resolve(
        &self,
        token: &[u8],
        session: &SessionRef,
        principal: Principal<'_>,
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
        self.check_caller(&sealed, principal)
            .map_err(Unroutable::NotTheCaller)?;
        let backend = find(sealed.backend_bytes())
            .ok_or_else(|| Unroutable::OwnerGone(sealed.backend().to_owned()))?;
        Ok(Owned { backend, sealed })
    }

    /// What a response's `Mcp-Session-Id` is, when ids are kept in a store
    /// (nothing is sealed into it: the client sees the server's id).
    pub fn classify_response(&self, value: &[u8], owned: Option<&Owned>) -> ResponseId {
        if owned.is_some_and(|owned| value == owned.upstream_id_bytes()) {
            return ResponseId::Same;
        }
        match is_session_id(value) && value.len() <= token::MAX_UPSTREAM_ID {
            true => ResponseId::New(String::new()),
            false => ResponseId::Invalid,
        }
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
    /// id, too long) passes as it is, with a warning. `init`: the `params` of
    /// the client's `initialize`, sealed in too (`failover = "reinitialize"`;
    /// params too long for the token are left out, so its failover is the 404).
    pub fn seal_response(
        &self,
        value: &[u8],
        backend: &Backend,
        owned: Option<&Owned>,
        (principal, init): (Option<&[u8]>, Option<&[u8]>),
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
        let tag = principal.map(|p| self.principal_tag(p));
        let sealer = self.sealer();
        let replayable = init
            .and_then(|init| sealer.seal_replayable(&backend.id, upstream_id, tag.as_ref(), init));
        match replayable.or_else(|| {
            sealer.seal(
                TokenKind::Streamable,
                &backend.id,
                upstream_id,
                tag.as_ref(),
            )
        }) {
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
