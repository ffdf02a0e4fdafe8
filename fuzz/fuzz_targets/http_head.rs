//! HTTP request-head parser over arbitrary bytes, with a small `max_head`.
//!
//! The module is `gateway/src/http.rs` compiled on its own (it has no dependency on the rest of
//! the gateway), so fuzzing needs neither glommio nor the gateway's other crates.
//!
//! Properties: no panic; a complete head lies within the bytes given and within `max_head`;
//! incomplete input under the limit is "need more"; the 101 response can always be written.

#![no_main]

#[path = "../../gateway/src/http.rs"]
#[allow(dead_code)]
mod http;

use libfuzzer_sys::fuzz_target;

const MAX_HEAD: usize = 512;

fuzz_target!(|data: &[u8]| {
    match http::parse_request(data, MAX_HEAD) {
        Ok(Some((head, n))) => {
            assert!(n <= data.len() && n <= MAX_HEAD);
            assert!(!head.path.contains('?'));
            // Parsing only the head gives the same answer.
            let again = http::parse_request(&data[..n], MAX_HEAD);
            assert_eq!(again, Ok(Some((head.clone(), n))));
            if let Some(key) = &head.websocket_key {
                let mut out = Vec::new();
                http::response_switching(&mut out, key);
                assert!(out.ends_with(b"\r\n\r\n"));
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEAD),
        Err(http::HttpError::TooLarge) => {}
        Err(http::HttpError::Malformed(_)) => {}
    }
});
