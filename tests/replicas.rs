//! Any number of Tether replicas sharing a key serve the same sessions.

mod support;

use mcp_tether::affinity::SessionKey;
use support::*;

#[tokio::test]
async fn streamable_session_moves_freely_between_tether_instances() {
    let replicas = replicas(3).await;
    let key = SessionKey::generate();
    let a = tether_with(&replicas, &key, "").await;
    let b = tether_with(&replicas, &key, "").await;
    for _ in 0..4 {
        let via_a = StreamableClient::connect(&mcp_url(&a)).await.unwrap();
        let owner = sticky_owner(&via_a, 2).await;
        // The same session, continued through instance B.
        let via_b = StreamableClient::resume(&mcp_url(&b), via_a.session_id().unwrap()).unwrap();
        for _ in 0..3 {
            assert_eq!(via_b.whoami().await.unwrap(), owner);
        }
    }
}

#[tokio::test]
async fn legacy_stream_on_one_instance_posts_through_another() {
    let replicas = replicas(3).await;
    let key = SessionKey::generate();
    let a = tether_with(&replicas, &key, "").await;
    let b = tether_with(&replicas, &key, "").await;
    for _ in 0..3 {
        let c = LegacyClient::connect(&sse_url(&a)).await.unwrap();
        let post_via_b = c.post_url().replace(&base(&a), &base(&b));
        assert_ne!(post_via_b, c.post_url());
        let mut c = c.with_post_url(post_via_b);
        let first = c
            .whoami()
            .await
            .expect("POST through B, answer on A's stream");
        for _ in 0..2 {
            assert_eq!(c.whoami().await.unwrap(), first);
        }
    }
}

#[tokio::test]
async fn a_different_key_does_not_open_the_session() {
    let replicas = replicas(2).await;
    let a = tether_with(&replicas, &SessionKey::generate(), "").await;
    let b = tether_with(&replicas, &SessionKey::generate(), "").await;
    let via_a = StreamableClient::connect(&mcp_url(&a)).await.unwrap();
    let via_b = StreamableClient::resume(&mcp_url(&b), via_a.session_id().unwrap()).unwrap();
    assert_eq!(via_b.whoami().await.unwrap_err().status, Some(404));
}
