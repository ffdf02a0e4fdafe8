//! RESP2 reply decoder (`resp_client::Decoder`) over arbitrary bytes, with small limits so the
//! length, element-count and depth checks are hit.
//!
//! The decoder is resp-client's `codec`, `scan`, `reply` and `error` modules compiled on their
//! own (they need only `bytes`, `redis-protocol` and `thiserror`), so fuzzing neither links
//! glommio nor breaks while the client's connection code is being changed.
//!
//! Input: the first byte picks where the stream is cut into two reads; the rest is the stream.
//!
//! Properties: no panic; the buffer only ever holds input not yet consumed (so it never grows
//! beyond the input); every reply respects the limits; a stream decodes to the same replies and
//! the same outcome whether it arrives whole, in two reads or byte by byte; each reply decodes
//! the same from its own bytes and from a canonical re-encoding; after an error, `reset()` and a
//! fresh buffer give a working decoder again.

#![no_main]

// The module names and the crate-root `Error` / `Reply` match resp-client's `lib.rs`, which
// these modules refer to as `crate::scan`, `crate::Error` and `crate::Reply`.
#[path = "../../resp-client/src/codec.rs"]
#[allow(dead_code)]
mod codec;
#[path = "../../resp-client/src/error.rs"]
#[allow(dead_code)]
mod error;
#[path = "../../resp-client/src/reply.rs"]
#[allow(dead_code)]
mod reply;
#[path = "../../resp-client/src/scan.rs"]
mod scan;

use bytes::{BufMut, Bytes, BytesMut};
use codec::{Decoder, MAX_DEPTH};
use error::Error;
use libfuzzer_sys::fuzz_target;
use reply::Reply;

const MAX_REPLY_BYTES: usize = 4096;
const MAX_ARRAY_LEN: usize = 64;
/// Byte-by-byte feeding is quadratic in the worst case; only for shorter streams.
const BYTEWISE_MAX: usize = 1024;

/// What decoding one stream produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// Each reply with the number of bytes it consumed.
    replies: Vec<(Reply, usize)>,
    errored: bool,
    /// Bytes left in the buffer (only meaningful without an error).
    rest: Bytes,
}

/// Decodes from `buf` until `Ok(None)` or `Err`, appending to `out`. `fed` counts all bytes
/// ever appended to `buf` and `consumed` the bytes replies took from it.
fn drain(
    dec: &mut Decoder,
    buf: &mut BytesMut,
    fed: usize,
    consumed: &mut usize,
    out: &mut Outcome,
) {
    loop {
        let before = buf.len();
        let cap_before = buf.capacity();
        let result = dec.decode(buf);
        assert!(buf.len() <= before, "decode grew the buffer");
        assert!(
            buf.capacity() <= cap_before,
            "decode reserved memory in the read buffer"
        );
        match result {
            Ok(Some(reply)) => {
                let used = before - buf.len();
                assert!(used > 0, "a reply consumed no bytes");
                assert!(
                    used <= MAX_REPLY_BYTES,
                    "reply of {used} bytes over the limit"
                );
                *consumed += used;
                out.replies.push((reply, used));
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "need-more consumed bytes");
                break;
            }
            Err(_) => {
                out.errored = true;
                break;
            }
        }
        assert_eq!(
            *consumed + buf.len(),
            fed,
            "buffer does not hold exactly the unconsumed input"
        );
    }
    assert!(buf.len() <= fed);
}

fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut dec = Decoder::new(MAX_REPLY_BYTES, MAX_ARRAY_LEN);
    let mut buf = BytesMut::new();
    let mut out = Outcome {
        replies: Vec::new(),
        errored: false,
        rest: Bytes::new(),
    };
    let (mut fed, mut consumed) = (0, 0);
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        drain(&mut dec, &mut buf, fed, &mut consumed, &mut out);
        if out.errored {
            // The stream is dead; a reset decoder must work on a fresh buffer.
            check_usable_after_reset(&mut dec);
            return out;
        }
    }
    out.rest = buf.freeze();
    out
}

fn check_usable_after_reset(dec: &mut Decoder) {
    dec.reset();
    let mut fresh = BytesMut::from(&b"*2\r\n+OK\r\n$3\r\nfoo\r\n:7\r\n"[..]);
    let first = dec
        .decode(&mut fresh)
        .expect("reset decoder rejected a valid reply");
    assert_eq!(
        first,
        Some(Reply::Array(vec![
            Reply::Simple(Bytes::from_static(b"OK")),
            Reply::Bulk(Bytes::from_static(b"foo")),
        ]))
    );
    assert_eq!(dec.decode(&mut fresh).unwrap(), Some(Reply::Int(7)));
    assert!(fresh.is_empty());
    assert_eq!(dec.decode(&mut fresh).unwrap(), None);
}

/// Checks the limits on a decoded reply and writes its canonical RESP2 encoding.
fn check_and_encode(reply: &Reply, depth: usize, out: &mut BytesMut) {
    match reply {
        Reply::Nil => out.put_slice(b"$-1\r\n"),
        Reply::Simple(s) | Reply::Error(s) => {
            assert!(
                !s.windows(2).any(|w| w == b"\r\n"),
                "a status line holds a CRLF"
            );
            out.put_u8(if matches!(reply, Reply::Simple(_)) {
                b'+'
            } else {
                b'-'
            });
            out.put_slice(s);
            out.put_slice(b"\r\n");
        }
        Reply::Int(i) => out.put_slice(format!(":{i}\r\n").as_bytes()),
        Reply::Bulk(b) => {
            assert!(b.len() <= MAX_REPLY_BYTES);
            out.put_slice(format!("${}\r\n", b.len()).as_bytes());
            out.put_slice(b);
            out.put_slice(b"\r\n");
        }
        Reply::Array(items) => {
            assert!(
                items.len() <= MAX_ARRAY_LEN,
                "array of {} elements",
                items.len()
            );
            // `*0` opens no level, so only non-empty arrays count towards the depth.
            if !items.is_empty() {
                assert!(depth < MAX_DEPTH, "nesting deeper than {MAX_DEPTH}");
            }
            out.put_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                check_and_encode(item, depth + 1, out);
            }
        }
        other => panic!("RESP2 stream produced a RESP3 reply: {other:?}"),
    }
}

/// Decodes `bytes` with a fresh decoder, expecting exactly one reply and nothing left.
fn decode_one(bytes: &[u8], max_reply_bytes: usize) -> Reply {
    let mut dec = Decoder::new(max_reply_bytes, MAX_ARRAY_LEN);
    let mut buf = BytesMut::from(bytes);
    let reply = dec
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("{e} on {:?}", String::from_utf8_lossy(bytes)))
        .expect("a complete reply was incomplete");
    assert!(buf.is_empty(), "bytes left after one reply");
    reply
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };

    let whole = decode_chunks([stream]);

    // Each reply alone, and its canonical encoding, decode to the same reply.
    let mut offset = 0;
    for (reply, used) in &whole.replies {
        let own = &stream[offset..offset + used];
        offset += used;
        assert_eq!(&decode_one(own, MAX_REPLY_BYTES), reply);
        let mut canonical = BytesMut::new();
        check_and_encode(reply, 0, &mut canonical);
        // Canonical forms are never longer than what was read (no leading zeros, `$-1` for
        // every nil) except `*-1` -> `$-1`, which is the same length.
        assert!(
            canonical.len() <= *used,
            "canonical form longer than the wire form"
        );
        assert_eq!(&decode_one(&canonical, MAX_REPLY_BYTES), reply);
    }
    if !whole.errored {
        assert_eq!(&whole.rest[..], &stream[offset..]);
    }

    // The same bytes in two reads.
    let cut = (sel as usize * stream.len()) / 256;
    let split = decode_chunks([&stream[..cut], &stream[cut..]]);
    assert_eq!(split, whole, "two reads (cut at {cut}) decoded differently");

    // And one byte per read, which stops the scan at every possible offset.
    if stream.len() <= BYTEWISE_MAX {
        let bytewise = decode_chunks(stream.chunks(1));
        assert_eq!(bytewise, whole, "byte-by-byte reads decoded differently");
    }
});
