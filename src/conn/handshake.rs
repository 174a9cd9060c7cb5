//! A client's TLS handshake, in its connection's task: after any PROXY
//! header (whose trailing bytes, the start of the ClientHello, are handed
//! to rustls first), within `tls.handshake_timeout`. Counted either way;
//! a failure is logged like other hostile input (`hostile`) and closes the
//! connection. A connection that closes before sending a byte (an L4
//! balancer's TCP check) is neither.

use std::sync::Arc;

use tokio::time::Instant;

use crate::downstream::{Client, ConnSettings};
use crate::metrics::{self, Metrics};
use crate::tls::{failure_reason, tls_failure_reason, version_label, Terminator};
use crate::transport::Stream;

/// The client, now over TLS; `None`: the handshake failed (counted, logged).
pub async fn handshake(
    client: Client,
    tls: &Arc<Terminator>,
    metrics: &Metrics,
    settings: &ConnSettings,
) -> Option<Client> {
    let (stream, peer, early) = client.into_parts();
    let Stream::Tcp(tcp) = stream else {
        return None;
    };
    let failed = |reason: &'static str, detail: String| {
        metrics
            .tls_handshake_failures
            .get_or_create(&metrics::Reason { reason })
            .inc();
        crate::downstream::hostile::note(
            "tls_handshake",
            &format!("{reason}: {detail} (from {peer})"),
        );
        None
    };
    let deadline = Instant::now() + tls.handshake_timeout();
    if early.is_empty() {
        // A peek (one syscall per connection, against a handshake's cost):
        // a close before any byte is a TCP check, not a failed handshake.
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
            Ok(Ok(0)) => return None,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return failed("io", e.to_string()),
            Err(_) => {
                return failed(
                    "timeout",
                    "no handshake within tls.handshake_timeout".into(),
                )
            }
        }
    }
    let mut refused = None;
    let accept = tls.acceptor().accept_with(tcp, |conn| {
        // Bytes that came with the PROXY header: the ClientHello's start.
        let mut rest = &early[..];
        while !rest.is_empty() && refused.is_none() {
            match conn.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    refused = Some(("protocol", e.to_string()));
                    break;
                }
            }
            if let Err(e) = conn.process_new_packets() {
                refused = Some((tls_failure_reason(&e), e.to_string()));
            }
        }
    });
    if let Some((reason, detail)) = refused {
        // Refused already: the handshake would only wait for the timeout.
        return failed(reason, detail);
    }
    match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(stream)) => {
            let version = version_label(stream.get_ref().1.protocol_version());
            metrics
                .tls_handshakes
                .get_or_create(&metrics::Version { version })
                .inc();
            let stream = Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(stream)));
            Some(Client::new(stream, peer, settings))
        }
        Ok(Err(e)) => failed(failure_reason(&e), e.to_string()),
        Err(_) => failed(
            "timeout",
            "no handshake within tls.handshake_timeout".into(),
        ),
    }
}
