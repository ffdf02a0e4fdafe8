//! JWT verification over arbitrary strings.
//!
//! Properties: no panic; anything accepted has a valid subject and an unexpired `exp`, and was
//! signed with the key (re-signing its claims must reproduce a token that verifies).

#![no_main]

use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz-secret";
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(claims) = auth::verify_hs256(KEY, token, NOW, 30) {
        assert!(auth::valid_subject(&claims.sub));
        assert!(NOW < claims.exp.saturating_add(30));
        let again = auth::sign_hs256(KEY, &claims);
        assert_eq!(auth::verify_hs256(KEY, &again, NOW, 30), Ok(claims));
    }
});
