//! Client JSON: parsing a `send` and encoding the `message` recipients get.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::value::RawValue;
use wire::client::{self, ClientMessage, DEFAULT_MAX_BODY};

#[global_allocator]
static A: benches::Counting = benches::Counting;

fn bench_client(c: &mut Criterion) {
    let body = format!(
        r#"{{"text":"{}","attachments":[1,2,3],"reply_to":null}}"#,
        "x".repeat(150)
    );
    let send = format!(r#"{{"type":"send","id":"c-123456","to":"bob@example.com","body":{body}}}"#);
    let mut g = c.benchmark_group("client_json");
    g.throughput(Throughput::Bytes(send.len() as u64));
    g.bench_function("parse_send", |b| {
        b.iter(|| {
            let msg = client::parse_client(black_box(&send), DEFAULT_MAX_BODY);
            black_box(msg.is_ok())
        })
    });

    benches::allocs_per_op(
        "client_json/parse_send",
        1000,
        || (),
        |()| client::parse_client(&send, DEFAULT_MAX_BODY).is_ok(),
    );

    let Ok(ClientMessage::Send { body, .. }) = client::parse_client(&send, DEFAULT_MAX_BODY) else {
        unreachable!()
    };
    let body: Box<RawValue> = RawValue::from_string(body.get().to_owned()).unwrap();
    let mut out = Vec::with_capacity(512);
    g.bench_function("encode_message", |b| {
        b.iter(|| {
            out.clear();
            client::encode_message(
                &mut out,
                black_box("00000000000004d2"),
                black_box("alice@example.com"),
                &body,
                black_box(1_700_000_000_000),
            );
            black_box(out.len())
        })
    });
    benches::allocs_per_op(
        "client_json/encode_message (into a reused buffer)",
        1000,
        || (),
        |()| {
            out.clear();
            client::encode_message(&mut out, "00000000000004d2", "alice@example.com", &body, 1);
            out.len()
        },
    );
    g.bench_function("parse_send_then_encode_message", |b| {
        b.iter(|| {
            let Ok(ClientMessage::Send { body, .. }) =
                client::parse_client(black_box(&send), DEFAULT_MAX_BODY)
            else {
                unreachable!()
            };
            out.clear();
            client::encode_message(&mut out, "00000000000004d2", "alice@example.com", body, 1);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_client);
criterion_main!(benches);
