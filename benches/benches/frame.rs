//! Link frame codec throughput: one `Send` / `Deliver` with a 200-byte payload, and a batch of
//! 64 frames decoded from one buffer (what a busy link reads per syscall).

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wire::frame::{self, DEFAULT_MAX_FRAME};

#[global_allocator]
static A: benches::Counting = benches::Counting;

const SESSIONS: [u64; 3] = [0x1111, 0x2222, 0x3333];

fn payload() -> Vec<u8> {
    let mut p = br#"{"type":"message","id":"0000000000000001","from":"alice@example.com","body":""#
        .to_vec();
    let fill = 200 - p.len() - br#"","ts":1700000000000}"#.len();
    p.extend(std::iter::repeat_n(b'x', fill));
    p.extend_from_slice(br#"","ts":1700000000000}"#);
    assert_eq!(p.len(), 200);
    p
}

fn bench_frames(c: &mut Criterion) {
    let payload = payload();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));

    let mut buf = BytesMut::with_capacity(4096);
    g.bench_function("encode_send_200B", |b| {
        b.iter(|| {
            buf.clear();
            frame::encode_send(
                &mut buf,
                black_box(42),
                black_box("bob@example.com"),
                &payload,
            );
            black_box(buf.len())
        })
    });
    g.bench_function("encode_deliver_200B_3sessions", |b| {
        b.iter(|| {
            buf.clear();
            frame::encode_deliver(
                &mut buf,
                black_box(42),
                "bob@example.com",
                &SESSIONS,
                &payload,
            );
            black_box(buf.len())
        })
    });

    let mut send = BytesMut::new();
    frame::encode_send(&mut send, 42, "bob@example.com", &payload);
    g.bench_function("decode_send_200B", |b| {
        b.iter_batched_ref(
            || send.clone(),
            |buf| black_box(frame::decode(buf, DEFAULT_MAX_FRAME)),
            BatchSize::SmallInput,
        )
    });
    let mut deliver = BytesMut::new();
    frame::encode_deliver(&mut deliver, 42, "bob@example.com", &SESSIONS, &payload);
    benches::allocs_per_op(
        "frame/decode_send_200B",
        1000,
        || send.clone(),
        |mut buf| frame::decode(&mut buf, DEFAULT_MAX_FRAME).map(|f| f.is_some()),
    );
    benches::allocs_per_op(
        "frame/encode_send_200B (into a reused buffer)",
        1000,
        || (),
        |()| {
            buf.clear();
            frame::encode_send(&mut buf, 42, "bob@example.com", &payload);
            buf.len()
        },
    );
    g.bench_function("decode_deliver_200B_3sessions", |b| {
        b.iter_batched_ref(
            || deliver.clone(),
            |buf| black_box(frame::decode(buf, DEFAULT_MAX_FRAME)),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut batch = BytesMut::new();
    for i in 0..64u64 {
        if i % 2 == 0 {
            frame::encode_send(&mut batch, i, "bob@example.com", &payload);
        } else {
            frame::encode_deliver(&mut batch, i, "bob@example.com", &SESSIONS, &payload);
        }
    }
    let mut g = c.benchmark_group("frame_batch");
    g.throughput(Throughput::Elements(64));
    g.bench_function("encode_64_mixed", |b| {
        let mut buf = BytesMut::with_capacity(batch.len());
        b.iter(|| {
            buf.clear();
            for i in 0..64u64 {
                if i % 2 == 0 {
                    frame::encode_send(&mut buf, i, "bob@example.com", &payload);
                } else {
                    frame::encode_deliver(&mut buf, i, "bob@example.com", &SESSIONS, &payload);
                }
            }
            black_box(buf.len())
        })
    });
    g.bench_function("decode_64_mixed_one_buffer", |b| {
        b.iter_batched_ref(
            || batch.clone(),
            |buf| {
                let mut n = 0;
                while let Ok(Some(f)) = frame::decode(buf, DEFAULT_MAX_FRAME) {
                    black_box(&f);
                    n += 1;
                }
                assert_eq!(n, 64);
            },
            BatchSize::SmallInput,
        )
    });
    benches::allocs_per_op(
        "frame_batch/decode_64_mixed_one_buffer",
        200,
        || batch.clone(),
        |mut buf| {
            let mut n = 0;
            while let Ok(Some(f)) = frame::decode(&mut buf, DEFAULT_MAX_FRAME) {
                black_box(&f);
                n += 1;
            }
            n
        },
    );
    g.finish();
}

criterion_group!(benches, bench_frames);
criterion_main!(benches);
