//! RESP3 reply decoder (`resp_client::Decoder::with_resp3(true)`, what a connection uses after
//! `HELLO 3`) over arbitrary bytes, with small limits so the length, element-count and depth
//! checks are hit. `resp_reply` covers the RESP2 path; this target covers the RESP3 types
//! (nulls, doubles, booleans, big numbers, blob errors, verbatim strings, maps, sets, pushes,
//! attributes) and the RESP2 types as a RESP3 connection sees them.
//!
//! The decoder is resp-client's `codec`, `scan`, `reply` and `error` modules compiled on their
//! own (they need only `bytes` and `thiserror`), like `resp_reply`.
//!
//! Input: the first byte picks where the stream is cut into two reads; the rest is the stream.
//!
//! Properties: no panic; the buffer only ever holds input not yet consumed; every reply respects
//! the limits (elements, map entries, nesting); a stream decodes to the same replies and the same
//! outcome whether it arrives whole, in two reads or byte by byte; each reply decodes the same
//! from its own bytes and from a canonical RESP3 re-encoding; a RESP2 decoder and the RESP3 one
//! agree on every reply the RESP2 one accepts (RESP3 is a superset); after an error, `reset()`
//! and a fresh buffer give a working decoder again.
//!
//! Replies are compared through their canonical encoding, not `PartialEq`: a NaN double is
//! not equal to itself.

#![no_main]

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

/// What decoding one stream produced: each reply's canonical encoding with the number of bytes
/// it consumed, whether it ended in an error, and the bytes left (without an error).
#[derive(Debug, PartialEq)]
struct Outcome {
    replies: Vec<(Vec<u8>, usize)>,
    errored: bool,
    rest: Bytes,
}

fn decoder(resp3: bool) -> Decoder {
    Decoder::new(MAX_REPLY_BYTES, MAX_ARRAY_LEN).with_resp3(resp3)
}

fn decode_chunks<'a>(resp3: bool, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut dec = decoder(resp3);
    let mut buf = BytesMut::new();
    let mut out = Outcome {
        replies: Vec::new(),
        errored: false,
        rest: Bytes::new(),
    };
    let (mut fed, mut consumed) = (0usize, 0usize);
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            let before = buf.len();
            let cap_before = buf.capacity();
            let result = dec.decode(&mut buf);
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
                    consumed += used;
                    let mut canonical = BytesMut::new();
                    check_and_encode(&reply, 0, resp3, &mut canonical);
                    out.replies.push((canonical.to_vec(), used));
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "need-more consumed bytes");
                    break;
                }
                Err(e) => {
                    assert!(matches!(e, Error::Protocol(_)), "decode error {e:?}");
                    out.errored = true;
                    break;
                }
            }
            assert_eq!(
                consumed + buf.len(),
                fed,
                "buffer does not hold exactly the unconsumed input"
            );
        }
        if out.errored {
            check_usable_after_reset(&mut dec, resp3);
            return out;
        }
    }
    out.rest = buf.freeze();
    out
}

fn check_usable_after_reset(dec: &mut Decoder, resp3: bool) {
    dec.reset();
    if !resp3 {
        let mut fresh = BytesMut::from(&b"*1\r\n$1\r\nx\r\n"[..]);
        let first = dec
            .decode(&mut fresh)
            .expect("reset decoder rejected a valid reply");
        assert_eq!(
            first,
            Some(Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"x"))]))
        );
        return;
    }
    let mut fresh = BytesMut::from(&b"%1\r\n+k\r\n~2\r\n#t\r\n_\r\n,1.5\r\n"[..]);
    let first = dec
        .decode(&mut fresh)
        .expect("reset decoder rejected a valid reply");
    assert_eq!(
        first,
        Some(Reply::Map(vec![(
            Reply::Simple(Bytes::from_static(b"k")),
            Reply::Set(vec![Reply::Boolean(true), Reply::Nil]),
        )]))
    );
    assert_eq!(dec.decode(&mut fresh).unwrap(), Some(Reply::Double(1.5)));
    assert!(fresh.is_empty());
    assert_eq!(dec.decode(&mut fresh).unwrap(), None);
}

fn put_len(out: &mut BytesMut, kind: u8, n: usize) {
    out.put_u8(kind);
    out.put_slice(n.to_string().as_bytes());
    out.put_slice(b"\r\n");
}

fn put_blob(out: &mut BytesMut, kind: u8, b: &[u8]) {
    put_len(out, kind, b.len());
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

/// Checks the limits on a decoded reply and writes its canonical RESP3 encoding (status lines
/// as `+`, errors as blob errors, nulls as `_`, doubles in exponent notation, attributes gone).
fn check_and_encode(reply: &Reply, depth: usize, resp3: bool, out: &mut BytesMut) {
    let aggregate = |out: &mut BytesMut, kind: u8, n: usize, elements: usize| {
        assert!(n <= MAX_ARRAY_LEN, "aggregate of {n} entries");
        // An empty aggregate opens no level, so only non-empty ones count towards the depth.
        if elements > 0 {
            assert!(depth < MAX_DEPTH, "nesting deeper than {MAX_DEPTH}");
        }
        put_len(out, kind, n);
    };
    if !resp3 {
        assert!(
            matches!(
                reply,
                Reply::Nil
                    | Reply::Simple(_)
                    | Reply::Error(_)
                    | Reply::Int(_)
                    | Reply::Bulk(_)
                    | Reply::Array(_)
            ),
            "RESP2 stream produced a RESP3 reply: {reply:?}"
        );
    }
    match reply {
        Reply::Nil => out.put_slice(b"_\r\n"),
        Reply::Simple(s) => {
            assert!(
                !s.windows(2).any(|w| w == b"\r\n"),
                "a status line holds a CRLF"
            );
            out.put_u8(b'+');
            out.put_slice(s);
            out.put_slice(b"\r\n");
        }
        Reply::Error(e) => {
            assert!(std::str::from_utf8(e).is_ok(), "error text is not UTF-8");
            assert!(e.len() <= MAX_REPLY_BYTES);
            put_blob(out, b'!', e);
        }
        Reply::Int(i) => out.put_slice(format!(":{i}\r\n").as_bytes()),
        Reply::Bulk(b) => {
            assert!(b.len() <= MAX_REPLY_BYTES);
            put_blob(out, b'$', b);
        }
        Reply::Double(d) => {
            let text = if d.is_nan() {
                "nan".to_string()
            } else {
                format!("{d:e}")
            };
            out.put_u8(b',');
            out.put_slice(text.as_bytes());
            out.put_slice(b"\r\n");
        }
        Reply::Boolean(b) => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Reply::BigNumber(n) => {
            let digits = n.strip_prefix(b"-").unwrap_or(n);
            assert!(
                !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
                "big number {n:?}"
            );
            out.put_u8(b'(');
            out.put_slice(n);
            out.put_slice(b"\r\n");
        }
        Reply::Verbatim { format, text } => {
            assert_eq!(format.len(), 3, "verbatim format {format:?}");
            put_len(out, b'=', text.len() + 4);
            out.put_slice(format);
            out.put_u8(b':');
            out.put_slice(text);
            out.put_slice(b"\r\n");
        }
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
            let kind = match reply {
                Reply::Array(_) => b'*',
                Reply::Set(_) => b'~',
                _ => b'>',
            };
            aggregate(out, kind, items.len(), items.len());
            for item in items {
                check_and_encode(item, depth + 1, resp3, out);
            }
        }
        Reply::Map(pairs) => {
            aggregate(out, b'%', pairs.len(), pairs.len() * 2);
            for (k, v) in pairs {
                check_and_encode(k, depth + 1, resp3, out);
                check_and_encode(v, depth + 1, resp3, out);
            }
        }
    }
}

/// Decodes `bytes` with a fresh RESP3 decoder, expecting exactly one reply and nothing left;
/// returns its canonical encoding.
fn decode_one(bytes: &[u8], max_reply_bytes: usize) -> Vec<u8> {
    let mut dec = Decoder::new(max_reply_bytes, MAX_ARRAY_LEN).with_resp3(true);
    let mut buf = BytesMut::from(bytes);
    let reply = dec
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("{e} on {:?}", String::from_utf8_lossy(bytes)))
        .expect("a complete reply was incomplete");
    assert!(buf.is_empty(), "bytes left after one reply");
    let mut canonical = BytesMut::new();
    check_and_encode(&reply, 0, true, &mut canonical);
    canonical.to_vec()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };

    let whole = decode_chunks(true, [stream]);

    // Each reply alone, and its canonical encoding, decode to the same reply. The canonical
    // form may be longer than the wire form (`-ERR` becomes a blob error, `1.5` becomes
    // `1.5e0`), so it is decoded without the size limit; counts and depth do not grow.
    let mut offset = 0;
    for (canonical, used) in &whole.replies {
        let own = &stream[offset..offset + used];
        offset += used;
        assert_eq!(&decode_one(own, MAX_REPLY_BYTES), canonical);
        assert_eq!(
            &decode_one(canonical, usize::MAX / 2),
            canonical,
            "canonical form differs"
        );
    }
    if !whole.errored {
        assert_eq!(&whole.rest[..], &stream[offset..]);
    }

    // The same bytes in two reads.
    let cut = (sel as usize * stream.len()) / 256;
    let split = decode_chunks(true, [&stream[..cut], &stream[cut..]]);
    assert_eq!(split, whole, "two reads (cut at {cut}) decoded differently");

    // And one byte per read, which stops the scan at every possible offset.
    if stream.len() <= BYTEWISE_MAX {
        let bytewise = decode_chunks(true, stream.chunks(1));
        assert_eq!(bytewise, whole, "byte-by-byte reads decoded differently");
    }

    // RESP3 extends RESP2: whatever a RESP2 decoder accepts, the RESP3 one reads the same way
    // (up to how nulls and errors are written canonically, which is the same here).
    let resp2 = decode_chunks(false, [stream]);
    assert!(
        whole.replies.len() >= resp2.replies.len(),
        "RESP3 decoded fewer replies than RESP2"
    );
    assert_eq!(
        &whole.replies[..resp2.replies.len()],
        &resp2.replies[..],
        "RESP2 and RESP3 disagree"
    );
    if !resp2.errored {
        assert_eq!(resp2, whole, "a RESP2 stream decoded differently as RESP3");
    }
});
