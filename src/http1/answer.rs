//! A whole, small response body, for Tether's own exchanges with a backend
//! (health probes, a failover's `initialize`): never the relayed traffic,
//! which streams.

use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::chunked::ChunkedDecoder;
use super::head::{Framing, ResponseHead};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the body: {0}")]
    Io(#[from] std::io::Error),
    #[error("the chunked body is malformed")]
    Chunked,
    #[error("the backend closed the connection before the body's end")]
    Truncated,
}

/// Reads the body of the response whose head is `head`: from `raw` (the
/// bytes read past the head), then from `stream`. It stops at the body's
/// end, when `done(body so far)` says enough was read (an event stream does
/// not end), at `max` bytes, or when the backend closes (an error for a
/// body whose end was announced). The caller bounds the time it takes.
pub async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    head: &ResponseHead,
    mut raw: Vec<u8>,
    max: usize,
    done: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    let mut decoder = ChunkedDecoder::new();
    loop {
        let ended = match head.framing {
            Framing::None => true,
            Framing::Length(n) => {
                let room = n.saturating_sub(body.len() as u64);
                let take = usize::try_from(room).unwrap_or(usize::MAX).min(raw.len());
                body.extend_from_slice(&raw[..take]);
                body.len() as u64 >= n
            }
            Framing::Chunked => {
                decoder
                    .decode(&raw, &mut |d| body.extend_from_slice(d))
                    .map_err(|_| BodyError::Chunked)?;
                decoder.is_done()
            }
            Framing::UntilClose => {
                body.extend_from_slice(&raw);
                false
            }
        };
        raw.clear();
        if ended || body.len() >= max || done(&body) {
            return Ok(body);
        }
        if raw.capacity() == 0 {
            raw.reserve(8 * 1024);
        }
        if stream.read_buf(&mut raw).await? == 0 {
            return match head.framing {
                Framing::Length(_) | Framing::Chunked => Err(BodyError::Truncated),
                Framing::None | Framing::UntilClose => Ok(body),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: &[u8], split: usize, max: usize, marker: &[u8]) -> Vec<u8> {
        let head = ResponseHead::parse(response, 64 * 1024, false)
            .unwrap()
            .unwrap();
        let rest = &response[head.len..];
        let split = split.min(rest.len());
        let mut stream = &rest[split..];
        let done = |b: &[u8]| !marker.is_empty() && b.windows(marker.len()).any(|w| w == marker);
        read(&mut stream, &head, rest[..split].to_vec(), max, done)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn reads_each_framing_to_its_end_wherever_the_first_read_stopped() {
        let cases: [(&[u8], &[u8]); 3] = [
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloEXTRA", b"hello"),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
                b"hello",
            ),
            (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello", b"hello"),
        ];
        for (response, want) in cases {
            for split in 0..20 {
                assert_eq!(body_of(response, split, 1024, b"").await, want, "{split}");
            }
        }
        let no_body = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
        assert!(body_of(no_body, 0, 1024, b"").await.is_empty());
    }

    #[tokio::test]
    async fn stops_at_the_marker_or_the_bound() {
        let stream = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nevent: endpoint\ndata: /m\n\nmore";
        let got = body_of(stream, 10, 1024, b"event: endpoint").await;
        assert!(got.starts_with(b"event: endpoint"));
        assert!(body_of(stream, 0, 4, b"").await.len() >= 4);
    }

    #[tokio::test]
    async fn a_body_cut_before_its_announced_end_is_an_error() {
        for cut in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ] {
            let head = ResponseHead::parse(cut, 1024, false).unwrap().unwrap();
            let mut stream: &[u8] = b"";
            let r = read(&mut stream, &head, cut[head.len..].to_vec(), 1024, |_| {
                false
            })
            .await;
            assert!(matches!(r, Err(BodyError::Truncated)), "{r:?}");
        }
    }

    #[tokio::test]
    async fn a_malformed_chunk_is_an_error_not_a_panic() {
        let bad = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n";
        let head = ResponseHead::parse(bad, 1024, false).unwrap().unwrap();
        let mut stream: &[u8] = b"";
        let r = read(&mut stream, &head, bad[head.len..].to_vec(), 1024, |_| {
            false
        })
        .await;
        assert!(matches!(r, Err(BodyError::Chunked)));
    }
}
