//! The gateway's WebSocket decoder (`wire::ws`) on what clients send: masked text frames
//! carrying a `send`, one per buffer and 64 in one buffer (a read that found a burst), and
//! the server frames the gateway writes (a delivered `message`).

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wire::ws::{self, Decoder, Message};

#[global_allocator]
static A: benches::Counting = benches::Counting;

const MAX: usize = 64 * 1024;
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client `send` of `body_len` bytes of body, as a masked text frame.
fn client_frame(body_len: usize) -> Vec<u8> {
    let json = format!(
        r#"{{"type":"send","id":"c-123456","to":"bob@example.com","body":{{"text":"{}"}}}}"#,
        "x".repeat(body_len)
    );
    let p = json.as_bytes();
    let mut f = vec![0x81];
    if p.len() < 126 {
        f.push(0x80 | p.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(p.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&MASK);
    f.extend(p.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

fn decode_all(buf: &mut [u8]) -> usize {
    let mut dec = Decoder::default();
    let mut n = 0;
    let used = dec
        .decode(buf, MAX, &mut |m| {
            if let Message::Text(t) = m {
                n += black_box(t).len();
            }
        })
        .expect("valid frames");
    assert_eq!(used, buf.len());
    n
}

fn bench_ws(c: &mut Criterion) {
    let one = client_frame(150);
    let mut g = c.benchmark_group("ws");
    g.throughput(Throughput::Bytes(one.len() as u64));
    g.bench_function("decode_text_masked_220B", |b| {
        b.iter_batched_ref(|| one.clone(), |buf| decode_all(buf), BatchSize::SmallInput)
    });
    benches::allocs_per_op(
        "ws/decode_text_masked_220B",
        1000,
        || one.clone(),
        |mut b| decode_all(&mut b),
    );

    let payload = vec![b'y'; 220];
    let mut out = BytesMut::with_capacity(4096);
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("encode_text_220B", |b| {
        b.iter(|| {
            out.clear();
            ws::encode_frame(&mut out, 0x81, black_box(&payload));
            black_box(out.len())
        })
    });
    benches::allocs_per_op(
        "ws/encode_text_220B (into a reused buffer)",
        1000,
        || (),
        |()| {
            out.clear();
            ws::encode_frame(&mut out, 0x81, &payload);
            out.len()
        },
    );

    let mut big = vec![0u8; 4096];
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("unmask_4KiB", |b| {
        b.iter(|| {
            ws::unmask(black_box(&mut big), MASK);
        })
    });
    g.finish();

    let mut burst = Vec::new();
    for _ in 0..64 {
        burst.extend_from_slice(&one);
    }
    let mut g = c.benchmark_group("ws_batch");
    g.throughput(Throughput::Elements(64));
    g.bench_function("decode_64_text_one_buffer", |b| {
        b.iter_batched_ref(
            || burst.clone(),
            |buf| decode_all(buf),
            BatchSize::SmallInput,
        )
    });
    benches::allocs_per_op(
        "ws_batch/decode_64_text_one_buffer",
        200,
        || burst.clone(),
        |mut b| decode_all(&mut b),
    );
    g.finish();
}

criterion_group!(benches, bench_ws);
criterion_main!(benches);
