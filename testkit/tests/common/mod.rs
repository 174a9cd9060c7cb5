//! Helpers shared by the testkit's integration tests.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// Fail a test that hangs instead of waiting forever. This is a guard, not synchronisation.
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("test timed out")
}

/// 32 lowercase hex characters.
pub fn is_session_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
