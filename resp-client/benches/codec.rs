//! resp-client's sans-I/O hot path over in-memory buffers: command encoding, reply decoding,
//! in-order reply matching, and cluster slot routing. `cargo bench -p resp-client`.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use resp_client::codec::encode_command;
use resp_client::slot::key_slot;
use resp_client::{Batch, Decoder, Int, Pipeline};

#[global_allocator]
static A: benches::Counting = benches::Counting;

const VALUE: &[u8] = b"0123456789abcdef0123456789abcdef";
const MEMBER: &[u8] = b"00000000deadbeef|gw-1|3|10.0.0.7:7100";

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let mut buf = BytesMut::with_capacity(64 * 1024);
    g.bench_function("set_ex_32B", |b| {
        b.iter(|| {
            buf.clear();
            encode_command(
                &mut buf,
                &[b"SET", b"key:000123", black_box(VALUE), b"EX", b"60"],
            );
            black_box(buf.len())
        })
    });
    g.bench_function("get", |b| {
        b.iter(|| {
            buf.clear();
            encode_command(&mut buf, &[b"GET", black_box(b"key:000123")]);
            black_box(buf.len())
        })
    });
    g.bench_function("registry_register_batch_4_cmds", |b| {
        let key = b"connect:u:{alice@example.com}";
        b.iter(|| {
            let now = black_box(1_764_000_000_000i64);
            let ttl = Int::from(60_000);
            let mut batch = Batch::new();
            batch.push(&[b"ZREMRANGEBYSCORE", key, b"-inf", Int::from(now).as_ref()]);
            batch.push(&[b"ZADD", key, Int::from(now + 60_000).as_ref(), MEMBER]);
            batch.push(&[b"PEXPIRE", key, ttl.as_ref(), b"NX"]);
            batch.push(&[b"PEXPIRE", key, ttl.as_ref(), b"GT"]);
            black_box(batch.len())
        })
    });
    benches::allocs_per_op(
        "encode/set_ex_32B (into a reused buffer)",
        1000,
        || (),
        |()| {
            buf.clear();
            encode_command(&mut buf, &[b"SET", b"key:000123", VALUE, b"EX", b"60"]);
            buf.len()
        },
    );
    g.finish();
}

/// One reply of kind `i % 3`: `+OK`, a 32-byte bulk, or a 3-member `ZRANGE` array.
fn put_reply(wire: &mut BytesMut, i: usize) {
    match i % 3 {
        0 => wire.put_slice(b"+OK\r\n"),
        1 => {
            wire.put_slice(format!("${}\r\n", VALUE.len()).as_bytes());
            wire.put_slice(VALUE);
            wire.put_slice(b"\r\n");
        }
        _ => {
            wire.put_slice(b"*3\r\n");
            for _ in 0..3 {
                wire.put_slice(format!("${}\r\n", MEMBER.len()).as_bytes());
                wire.put_slice(MEMBER);
                wire.put_slice(b"\r\n");
            }
        }
    }
}

fn one_reply(i: usize) -> BytesMut {
    let mut wire = BytesMut::new();
    put_reply(&mut wire, i);
    wire
}

/// `n` replies as one read would bring them, the three kinds in turn.
fn mixed_replies(n: usize) -> BytesMut {
    let mut wire = BytesMut::new();
    for i in 0..n {
        put_reply(&mut wire, i);
    }
    wire
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    let mut dec = Decoder::default();
    for (name, wire) in [
        ("ok", one_reply(0)),
        ("bulk_32B", one_reply(1)),
        ("zrange_3_members", one_reply(2)),
    ] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || wire.clone(),
                |buf| black_box(dec.decode(buf).unwrap()),
                BatchSize::SmallInput,
            )
        });
        benches::allocs_per_op(
            &format!("decode/{name}"),
            1000,
            || wire.clone(),
            |mut buf| dec.decode(&mut buf).unwrap(),
        );
    }
    let wire = mixed_replies(128);
    g.throughput(Throughput::Elements(128));
    g.bench_function("mixed_128_one_buffer", |b| {
        b.iter_batched_ref(
            || wire.clone(),
            |buf| {
                let mut n = 0;
                while let Some(r) = dec.decode(buf).unwrap() {
                    black_box(r);
                    n += 1;
                }
                assert_eq!(n, 128);
            },
            BatchSize::SmallInput,
        )
    });
    benches::allocs_per_op(
        "decode/mixed_128_one_buffer",
        200,
        || wire.clone(),
        |mut buf| {
            let mut out = Vec::with_capacity(0);
            while let Some(r) = dec.decode(&mut buf).unwrap() {
                out.push(r);
            }
            out.len()
        },
    );
    g.finish();
}

fn bench_matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("match");
    g.throughput(Throughput::Elements(128));
    let wire = mixed_replies(128);
    let mut dec = Decoder::default();
    let mut pipeline: Pipeline<u32> = Pipeline::new(Duration::from_secs(1), 16384);
    let now = Instant::now();
    // The read loop's work for one full read at depth 128, minus the socket: queue 128 slots,
    // decode 128 replies, give each to the oldest slot.
    g.bench_function("decode_and_match_128", |b| {
        b.iter_batched_ref(
            || wire.clone(),
            |buf| {
                // As the client does: slots queued unsent, timed once when the writer takes them.
                for i in 0..128 {
                    pipeline.push_unsent(i);
                }
                pipeline.mark_sent(now);
                while let Some(r) = dec.decode(buf).unwrap() {
                    let slot = pipeline.on_reply().unwrap();
                    black_box((slot, r));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_slots(c: &mut Criterion) {
    let mut g = c.benchmark_group("cluster");
    g.throughput(Throughput::Elements(1));
    g.bench_function("key_slot_registry_key", |b| {
        b.iter(|| key_slot(black_box(b"connect:u:{alice@example.com}")))
    });
    g.bench_function("key_slot_plain_key", |b| {
        b.iter(|| key_slot(black_box(b"key:000123")))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_encode,
    bench_decode,
    bench_matching,
    bench_slots
);
criterion_main!(benches);
