//! A client's TLS handshake, in its connection's task: after any PROXY
//! header (whose trailing bytes, the start of the ClientHello, are handed
//! to rustls first), within `tls.handshake_timeout`. Counted either way;
//! a failure is logged like other hostile input (`hostile`) and closes the
//! connection.

use std::sync::Arc;

use crate::downstream::{Client, ConnSettings};
use crate::metrics::{self, Metrics};
use crate::tls::{failure_reason, version_label, Terminator};
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
    let accept = tls.acceptor().accept_with(tcp, |conn| {
        // Bytes that came with the PROXY header: the ClientHello's start.
        let mut rest = &early[..];
        while !rest.is_empty() {
            match conn.read_tls(&mut rest) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if conn.process_new_packets().is_err() {
                break;
            }
        }
    });
    let failed = |reason: &'static str, detail: String| {
        metrics
            .tls_handshake_failures
            .get_or_create(&metrics::Reason { reason })
            .inc();
        super::hostile::note(
            "tls_handshake",
            &format!("{reason}: {detail} (from {peer})"),
        );
        None
    };
    match tokio::time::timeout(tls.handshake_timeout(), accept).await {
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
