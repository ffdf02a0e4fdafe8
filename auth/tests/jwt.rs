//! Every way a token is accepted or refused.

use auth::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const KEY: &[u8] = b"test-secret-0123456789abcdef";
const NOW: u64 = 1_700_000_000;

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// Builds and signs a token from raw header and payload JSON.
fn token(header: &str, payload: &str, key: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn verify(t: &str) -> Result<Claims, AuthError> {
    verify_hs256(KEY, t, NOW, 0)
}

#[test]
fn sign_verify_round_trip() {
    let claims = Claims {
        sub: "alice@example.com".into(),
        exp: NOW + 60,
        nbf: Some(NOW - 5),
        iat: Some(NOW - 5),
    };
    let t = sign_hs256(KEY, &claims);
    assert_eq!(t.split('.').count(), 3);
    assert_eq!(verify(&t), Ok(claims));
}

#[test]
fn dev_token_works() {
    let t = dev_token(KEY, "bob", 3600, NOW);
    let c = verify(&t).unwrap();
    assert_eq!(c.sub, "bob");
    assert_eq!(c.exp, NOW + 3600);
    assert_eq!(c.iat, Some(NOW));
    assert_eq!(c.nbf, None);
}

#[test]
fn hand_built_token_without_typ() {
    let t = token(
        r#"{"alg":"HS256"}"#,
        r#"{"sub":"carol","exp":1700000100,"extra":[1]}"#,
        KEY,
    );
    assert_eq!(verify(&t).unwrap().sub, "carol");
}

#[test]
fn alg_none_refused() {
    let payload = b64(r#"{"sub":"alice","exp":1800000000}"#);
    for header in [r#"{"alg":"none"}"#, r#"{"alg":"None","typ":"JWT"}"#] {
        assert_eq!(
            verify(&format!("{}.{payload}.", b64(header))),
            Err(AuthError::UnsupportedAlgorithm)
        );
    }
}

#[test]
fn wrong_alg_refused() {
    let payload = r#"{"sub":"alice","exp":1800000000}"#;
    for header in [
        r#"{"alg":"RS256"}"#,
        r#"{"alg":"HS512"}"#,
        r#"{"alg":"hs256"}"#,
        r#"{"alg":"HS256 "}"#,
        r#"{"typ":"JWT"}"#,
        r#"{"alg":256}"#,
    ] {
        let t = token(header, payload, KEY);
        let e = verify(&t).unwrap_err();
        assert!(
            e == AuthError::UnsupportedAlgorithm || e == AuthError::Malformed,
            "{header}: {e:?}"
        );
    }
    assert_eq!(
        verify(&token(r#"{"alg":"RS256"}"#, payload, KEY)),
        Err(AuthError::UnsupportedAlgorithm)
    );
    assert_eq!(
        verify(&token(r#"{"typ":"JWT"}"#, payload, KEY)),
        Err(AuthError::UnsupportedAlgorithm)
    );
}

#[test]
fn wrong_key_refused() {
    let t = dev_token(b"another key", "alice", 60, NOW);
    assert_eq!(verify(&t), Err(AuthError::BadSignature));
    let t = dev_token(b"", "alice", 60, NOW);
    assert_eq!(verify(&t), Err(AuthError::BadSignature));
}

#[test]
fn tampered_payload_refused() {
    let t = dev_token(KEY, "alice", 60, NOW);
    let parts: Vec<&str> = t.split('.').collect();
    let forged = b64(&format!(r#"{{"sub":"admin","exp":{}}}"#, NOW + 60));
    assert_eq!(
        verify(&format!("{}.{forged}.{}", parts[0], parts[2])),
        Err(AuthError::BadSignature)
    );
    // A flipped signature byte.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let t2 = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(verify(&t2), Err(AuthError::BadSignature));
    // A truncated signature.
    let t3 = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(&sig[..16])
    );
    assert_eq!(verify(&t3), Err(AuthError::BadSignature));
}

#[test]
fn expiry_and_leeway() {
    let t = dev_token(KEY, "alice", 60, NOW);
    assert!(verify_hs256(KEY, &t, NOW + 59, 0).is_ok());
    assert_eq!(verify_hs256(KEY, &t, NOW + 60, 0), Err(AuthError::Expired));
    assert!(verify_hs256(KEY, &t, NOW + 60, 30).is_ok());
    assert_eq!(verify_hs256(KEY, &t, NOW + 90, 30), Err(AuthError::Expired));
    let t = token(HS256, r#"{"sub":"a","exp":18446744073709551615}"#, KEY);
    assert!(verify_hs256(KEY, &t, u64::MAX - 1, u64::MAX).is_ok());
}

#[test]
fn not_before_in_the_future() {
    let claims = Claims {
        sub: "alice".into(),
        exp: NOW + 600,
        nbf: Some(NOW + 100),
        iat: None,
    };
    let t = sign_hs256(KEY, &claims);
    assert_eq!(verify(&t), Err(AuthError::NotYetValid));
    assert_eq!(verify_hs256(KEY, &t, NOW, 99), Err(AuthError::NotYetValid));
    assert!(verify_hs256(KEY, &t, NOW, 100).is_ok());
    assert!(verify_hs256(KEY, &t, NOW + 100, 0).is_ok());
}

#[test]
fn missing_claims() {
    let t = token(HS256, r#"{"exp":1800000000}"#, KEY);
    assert_eq!(verify(&t), Err(AuthError::MissingSubject));
    let t = token(HS256, r#"{"sub":"alice"}"#, KEY);
    assert_eq!(verify(&t), Err(AuthError::MissingExpiry));
    let t = token(HS256, r#"{"sub":null,"exp":1800000000}"#, KEY);
    assert_eq!(verify(&t), Err(AuthError::MissingSubject));
}

#[test]
fn invalid_subject() {
    for sub in ["", "has space", "a/b", "é"] {
        let t = token(
            HS256,
            &format!(r#"{{"sub":"{sub}","exp":1800000000}}"#),
            KEY,
        );
        assert_eq!(verify(&t), Err(AuthError::InvalidSubject), "{sub:?}");
    }
    let long = "u".repeat(MAX_SUBJECT_LEN + 1);
    let t = token(
        HS256,
        &format!(r#"{{"sub":"{long}","exp":1800000000}}"#),
        KEY,
    );
    assert_eq!(verify(&t), Err(AuthError::InvalidSubject));
    let ok = "u".repeat(MAX_SUBJECT_LEN);
    let t = token(HS256, &format!(r#"{{"sub":"{ok}","exp":1800000000}}"#), KEY);
    assert!(verify(&t).is_ok());
}

#[test]
fn wrongly_typed_claims_are_malformed() {
    for payload in [
        r#"{"sub":"a","exp":"1800000000"}"#,
        r#"{"sub":"a","exp":1.8e9}"#,
        r#"{"sub":"a","exp":-1}"#,
        r#"{"sub":5,"exp":1800000000}"#,
        r#"["a",1800000000]"#,
        r#"{"sub":"a","exp":1800000000"#,
        r#"{"sub":"a","sub":"b","exp":1800000000}"#,
    ] {
        assert_eq!(
            verify(&token(HS256, payload, KEY)),
            Err(AuthError::Malformed),
            "{payload}"
        );
    }
    assert_eq!(
        verify(&token(
            r#"["HS256"]"#,
            r#"{"sub":"a","exp":1800000000}"#,
            KEY
        )),
        Err(AuthError::Malformed)
    );
}

#[test]
fn oversized_refused() {
    let t = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(verify(&t), Err(AuthError::TooLong));
    // A validly signed but oversized token too.
    let pad = "p".repeat(MAX_TOKEN_LEN);
    let t = token(
        HS256,
        &format!(r#"{{"sub":"a","exp":1800000000,"pad":"{pad}"}}"#),
        KEY,
    );
    assert_eq!(verify(&t), Err(AuthError::TooLong));
}

#[test]
fn bad_shape_and_base64() {
    let good = dev_token(KEY, "alice", 60, NOW);
    let parts: Vec<&str> = good.split('.').collect();
    for t in [
        String::new(),
        "not.a.jwt".into(),
        "only-one-part".into(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra"),
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]), // padding
        format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", parts[0].replace('e', "+"), parts[1], parts[2]), // standard alphabet
        format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], "%%%"),
    ] {
        assert_eq!(verify(&t), Err(AuthError::Malformed), "{t:?}");
    }
    // Payload that is not base64 but correctly signed as text: malformed, after the signature.
    let input = format!("{}.{}", b64(HS256), "@@@");
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    mac.update(input.as_bytes());
    let t = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(verify(&t), Err(AuthError::Malformed));
}

#[test]
fn errors_display() {
    assert_eq!(AuthError::Expired.to_string(), "token expired");
    assert!(AuthError::UnsupportedAlgorithm
        .to_string()
        .contains("HS256"));
}
