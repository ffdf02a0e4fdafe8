//! The gateway's WebSocket decoder (`wire::ws::Decoder`) over arbitrary client bytes, with a
//! small size limit so the 1009 checks are hit.
//!
//! Properties: no panic; the same bytes decode to the same messages and outcome whether they
//! arrive whole or in two reads (the caller keeping the unconsumed tail, as the gateway does);
//! text is valid UTF-8; control payloads stay within 125 bytes; close codes are allowed ones;
//! nothing is decoded after a close frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::ws::{close_code_allowed, Decoder, Message, WsError};

const MAX: usize = 300;

#[derive(Debug, PartialEq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn own(m: Message<'_>) -> Owned {
    match m {
        Message::Text(t) => Owned::Text(t.to_owned()),
        Message::Binary(b) => Owned::Binary(b.to_vec()),
        Message::Ping(b) => {
            assert!(b.len() <= 125);
            Owned::Ping(b.to_vec())
        }
        Message::Pong(b) => {
            assert!(b.len() <= 125);
            Owned::Pong(b.to_vec())
        }
        Message::Close(c, r) => {
            assert!(c.is_none_or(close_code_allowed));
            Owned::Close(c, r.to_owned())
        }
    }
}

/// Feeds `chunks` as successive reads; returns the messages and the error, if any.
fn run(chunks: &[&[u8]]) -> (Vec<Owned>, Option<WsError>) {
    let mut d = Decoder::default();
    let mut rx: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        rx.extend_from_slice(chunk);
        let r = d.decode(&mut rx, MAX, &mut |m| out.push(own(m)));
        match r {
            Ok(used) => {
                assert!(used <= rx.len());
                rx.drain(..used);
            }
            Err(e) => return (out, Some(e)),
        }
        if matches!(out.last(), Some(Owned::Close(..))) {
            return (out, None);
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let (whole, err) = run(&[data]);
    if let Some(&first) = data.first() {
        let cut = (first as usize * data.len()) / 256;
        let (split, err2) = run(&[&data[..cut], &data[cut..]]);
        assert_eq!(split, whole, "split read decoded differently");
        assert_eq!(err2, err, "split read changed the outcome");
    }
    if let Some(e) = err {
        assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
    }
});
