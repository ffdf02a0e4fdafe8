//! JWT verification, done once per WebSocket handshake.

use criterion::{black_box, criterion_group, criterion_main, Criterion};

#[global_allocator]
static A: benches::Counting = benches::Counting;

const SECRET: &[u8] = b"bench-secret-0123456789abcdef0123";
const NOW: u64 = 1_700_000_000;

fn bench_jwt(c: &mut Criterion) {
    let token = auth::dev_token(SECRET, "alice@example.com", 3600, NOW);
    let mut g = c.benchmark_group("jwt");
    g.bench_function("verify_hs256", |b| {
        b.iter(|| black_box(auth::verify_hs256(SECRET, black_box(&token), NOW, 30).is_ok()))
    });
    benches::allocs_per_op(
        "jwt/verify_hs256",
        1000,
        || (),
        |()| auth::verify_hs256(SECRET, &token, NOW, 30).is_ok(),
    );
    let forged = auth::dev_token(b"wrong", "alice@example.com", 3600, NOW);
    g.bench_function("verify_hs256_bad_signature", |b| {
        b.iter(|| black_box(auth::verify_hs256(SECRET, black_box(&forged), NOW, 30).is_err()))
    });
    g.bench_function("sign_hs256", |b| {
        b.iter(|| black_box(auth::dev_token(SECRET, "alice@example.com", 3600, NOW)))
    });
    g.finish();
}

criterion_group!(benches, bench_jwt);
criterion_main!(benches);
