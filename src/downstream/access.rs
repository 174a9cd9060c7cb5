//! The access log: one line per request (`target: "tether::access"`, level
//! info), made only when `log.access` is on and the level is enabled. It
//! names the session by a short hash of its token, never the token, and
//! logs the path without its query (a legacy query carries the token).

use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;

use tokio::time::Instant;

pub struct AccessLog {
    start: Instant,
    method: String,
    path: String,
    session: Option<u32>,
    pub status: u16,
    pub backend: Option<Arc<str>>,
    pub bytes: u64,
}

impl AccessLog {
    /// Whether lines are wanted at all (cheap: the callsite caches it).
    pub fn wanted(on: bool) -> bool {
        on && tracing::enabled!(target: "tether::access", tracing::Level::INFO)
    }

    pub fn new(method: &[u8], target: &[u8], token: Option<&[u8]>) -> Box<AccessLog> {
        let path = target.split(|&b| b == b'?').next().unwrap_or_default();
        Box::new(AccessLog {
            start: Instant::now(),
            method: String::from_utf8_lossy(method).into_owned(),
            path: String::from_utf8_lossy(path).into_owned(),
            session: token.map(short_hash),
            status: 0,
            backend: None,
            bytes: 0,
        })
    }

    pub fn emit(self) {
        let session = self.session.map(|h| format!("{h:08x}"));
        tracing::info!(
            target: "tether::access",
            method = %self.method,
            path = %self.path,
            status = self.status,
            backend = self.backend.as_deref().unwrap_or("none"),
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            bytes = self.bytes,
            session = session.as_deref().unwrap_or("-"),
        );
    }
}

/// 32 bits of SipHash of the token: tells sessions apart in a log, and
/// says nothing about the token (which is 100+ random-looking characters).
fn short_hash(token: &[u8]) -> u32 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    h.finish() as u32
}
