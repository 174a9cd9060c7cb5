//! Token seal and open cost (product target: under 1 us each).
//! Run: `cargo bench --bench token`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mcp_tether::affinity::{Sealer, SessionKey, TokenKind};

fn seal_open(c: &mut Criterion) {
    let sealer = Sealer::new(&SessionKey::generate());
    // Typical inputs: a host:port identity and a TypeScript-SDK UUID session id.
    let backend = "10.0.12.34:3000";
    let upstream = "3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8";
    c.bench_function("seal", |b| {
        b.iter(|| {
            sealer.seal(
                TokenKind::Streamable,
                black_box(backend),
                black_box(upstream),
                None,
            )
        })
    });
    let token = sealer
        .seal(TokenKind::Streamable, backend, upstream, None)
        .expect("seal");
    c.bench_function("open", |b| b.iter(|| sealer.open(black_box(&token))));
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
