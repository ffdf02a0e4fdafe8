//! Client JSON protocol: parsing every error code, encoders, escaping, body fidelity.

use serde_json::value::RawValue;
use serde_json::Value;
use wire::client::*;
use wire::AckStatus;

const MAX: usize = DEFAULT_MAX_BODY;

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

fn json(out: &[u8]) -> Value {
    serde_json::from_slice(out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)))
}

#[track_caller]
fn err(text: &str) -> (Option<String>, ErrorCode) {
    match parse_client(text, MAX) {
        Ok(m) => panic!("accepted {text:?}: {m:?}"),
        Err(e) => (e.id.map(|id| id.get().to_owned()), e.code),
    }
}

#[test]
fn parses_send() {
    let text = r#"{"type":"send","id":"c-1","to":"bob@x.io","body":{"text":"hi","n":[1,2.5e3]}}"#;
    let ClientMessage::Send { id, to, body } = parse_client(text, MAX).unwrap() else {
        panic!("not a send")
    };
    assert_eq!(id.get(), r#""c-1""#);
    assert_eq!(to, "bob@x.io");
    assert_eq!(body.get(), r#"{"text":"hi","n":[1,2.5e3]}"#);
}

#[test]
fn body_preserved_byte_for_byte() {
    // Odd spacing, escapes, exotic numbers and key order survive untouched.
    let body = r#"{ "b" :1.000e+02 ,"a":"\u00e9\n\"", "z":[ true,null ,{}] }"#;
    let text =
        format!(r#"  {{ "body" : {body} , "to":"bob", "id" : 17, "type":"send", "extra":[1] }}  "#);
    let ClientMessage::Send { id, body: got, .. } = parse_client(&text, MAX).unwrap() else {
        panic!("not a send")
    };
    assert_eq!(got.get(), body);
    assert_eq!(id.get(), "17");

    for body in ["null", "0", "\"s\"", "[]", "-1.5", "true"] {
        let text = format!(r#"{{"type":"send","id":1,"to":"bob","body":{body}}}"#);
        let ClientMessage::Send { body: got, .. } = parse_client(&text, MAX).unwrap() else {
            panic!("not a send")
        };
        assert_eq!(got.get(), body);
    }
}

#[test]
fn numeric_and_string_ids() {
    for id in ["0", "-3", "1.5e10", r#""""#, r#""a\"b""#] {
        let text = format!(r#"{{"type":"send","id":{id},"to":"bob","body":1}}"#);
        let ClientMessage::Send { id: got, .. } = parse_client(&text, MAX).unwrap() else {
            panic!("not a send")
        };
        assert_eq!(got.get(), id);
    }
}

#[test]
fn bad_json() {
    for text in [
        "",
        "   ",
        "not json",
        "{",
        r#"{"type":"send""#,
        "[1,2]",
        "\"send\"",
        "42",
        "null",
        r#"{"type":"send","id":1,"to":"bob","body":1} trailing"#,
        r#"{"type":"send",}"#,
    ] {
        assert_eq!(err(text), (None, ErrorCode::BadJson), "{text:?}");
    }
}

#[test]
fn bad_request() {
    let cases = [
        (r#"{"id":1,"to":"bob","body":1}"#, Some("1")),
        (r#"{"type":7,"id":1,"to":"bob","body":1}"#, Some("1")),
        (r#"{"type":"send","to":"bob","body":1}"#, None),
        (r#"{"type":"send","id":null,"to":"bob","body":1}"#, None),
        (r#"{"type":"send","id":{"a":1},"to":"bob","body":1}"#, None),
        (r#"{"type":"send","id":[1],"to":"bob","body":1}"#, None),
        (r#"{"type":"send","id":true,"to":"bob","body":1}"#, None),
        (r#"{"type":"send","id":"c","body":1}"#, Some(r#""c""#)),
        (
            r#"{"type":"send","id":"c","to":5,"body":1}"#,
            Some(r#""c""#),
        ),
        (
            r#"{"type":"send","id":"c","to":null,"body":1}"#,
            Some(r#""c""#),
        ),
        (r#"{"type":"send","id":"c","to":"bob"}"#, Some(r#""c""#)),
        (
            r#"{"type":"send","type":"send","id":"c","to":"bob","body":1}"#,
            None,
        ),
    ];
    for (text, id) in cases {
        assert_eq!(
            err(text),
            (id.map(str::to_owned), ErrorCode::BadRequest),
            "{text}"
        );
    }
    let long_id = format!("\"{}\"", "i".repeat(MAX_ID_LEN - 1));
    let text = format!(r#"{{"type":"send","id":{long_id},"to":"bob","body":1}}"#);
    assert_eq!(err(&text), (None, ErrorCode::BadRequest));
    let ok_id = format!("\"{}\"", "i".repeat(MAX_ID_LEN - 2));
    let text = format!(r#"{{"type":"send","id":{ok_id},"to":"bob","body":1}}"#);
    assert!(parse_client(&text, MAX).is_ok());
}

#[test]
fn unknown_type() {
    for (text, id) in [
        (
            r#"{"type":"subscribe","id":"c","to":"bob","body":1}"#,
            Some(r#""c""#),
        ),
        (r#"{"type":"SEND","id":9}"#, Some("9")),
        (r#"{"type":"","id":{}}"#, None),
    ] {
        assert_eq!(
            err(text),
            (id.map(str::to_owned), ErrorCode::UnknownType),
            "{text}"
        );
    }
    // An escaped "send" is still "send".
    let text = r#"{"type":"s\u0065nd","id":1,"to":"bob","body":1}"#;
    assert!(parse_client(text, MAX).is_ok());
}

#[test]
fn invalid_user() {
    for to in ["", "has space", "a/b", "é", "\\u0062ob", "\\n"] {
        let text = format!(r#"{{"type":"send","id":"c","to":"{to}","body":1}}"#);
        assert_eq!(
            err(&text),
            (Some(r#""c""#.into()), ErrorCode::InvalidUser),
            "{to}"
        );
    }
    let to = "u".repeat(wire::MAX_USER_LEN + 1);
    let text = format!(r#"{{"type":"send","id":"c","to":"{to}","body":1}}"#);
    assert_eq!(err(&text).1, ErrorCode::InvalidUser);
    let to = "u".repeat(wire::MAX_USER_LEN);
    let text = format!(r#"{{"type":"send","id":"c","to":"{to}","body":1}}"#);
    assert!(parse_client(&text, MAX).is_ok());
}

#[test]
fn too_large() {
    let body = format!("\"{}\"", "x".repeat(98)); // 100 bytes of raw JSON
    let text = format!(r#"{{"type":"send","id":"c","to":"bob","body":{body}}}"#);
    assert!(parse_client(&text, 100).is_ok());
    let e = parse_client(&text, 99).unwrap_err();
    assert_eq!(
        (e.id.map(RawValue::get), e.code),
        (Some(r#""c""#), ErrorCode::TooLarge)
    );

    // A frame far beyond the limit is refused before parsing.
    let text = format!(
        r#"{{"type":"send","id":"c","to":"bob","body":1,"pad":"{}"}}"#,
        " ".repeat(MAX_ENVELOPE_OVERHEAD + 200)
    );
    assert_eq!(
        parse_client(&text, 100).unwrap_err().code,
        ErrorCode::TooLarge
    );
}

#[test]
fn error_codes_spelled() {
    let all = [
        (ErrorCode::BadJson, "bad_json"),
        (ErrorCode::BadRequest, "bad_request"),
        (ErrorCode::UnknownType, "unknown_type"),
        (ErrorCode::TooLarge, "too_large"),
        (ErrorCode::InvalidUser, "invalid_user"),
        (ErrorCode::BinaryUnsupported, "binary_unsupported"),
        (ErrorCode::RateLimited, "rate_limited"),
        (ErrorCode::Internal, "internal"),
    ];
    for (code, s) in all {
        assert_eq!(code.as_str(), s);
        assert_eq!(code.to_string(), s);
    }
}

#[test]
fn welcome_round_trip_with_odd_strings() {
    let odd = [
        "plain",
        "q\"uote\\back",
        "ctl\u{0}\u{1f}\n\t",
        "ünï😀",
        "</script>",
    ];
    for s in odd {
        let mut out = Vec::new();
        encode_welcome(&mut out, "alice", s, s);
        let v = json(&out);
        assert_eq!(v["type"], "welcome");
        assert_eq!(v["user"], "alice");
        assert_eq!(v["session"], s);
        assert_eq!(v["gateway"], s);
        assert_eq!(v.as_object().unwrap().len(), 4);
    }
}

#[test]
fn ack_round_trip() {
    let mut out = Vec::new();
    encode_ack(&mut out, &raw(r#""c-1""#), AckStatus::Delivered, None);
    assert_eq!(out, br#"{"type":"ack","id":"c-1","status":"delivered"}"#);

    let mut out = Vec::new();
    encode_ack(
        &mut out,
        &raw("12"),
        AckStatus::Failed,
        Some("router \"down\""),
    );
    let v = json(&out);
    assert_eq!(v["id"], 12);
    assert_eq!(v["status"], "failed");
    assert_eq!(v["reason"], "router \"down\"");

    let mut out = Vec::new();
    encode_ack(&mut out, &raw("1"), AckStatus::Offline, Some(""));
    assert_eq!(json(&out)["status"], "offline");
}

#[test]
fn error_round_trip() {
    let mut out = Vec::new();
    encode_error(
        &mut out,
        None,
        ErrorCode::BadJson,
        "expected value at line 1\n",
    );
    let v = json(&out);
    assert_eq!(v["type"], "error");
    assert_eq!(v["id"], Value::Null);
    assert_eq!(v["code"], "bad_json");
    assert_eq!(v["message"], "expected value at line 1\n");

    // What a gateway does with a parse error.
    let text = r#"{"type":"send","id":"c\"9","to":"b b","body":1}"#;
    let e = parse_client(text, MAX).unwrap_err();
    let mut out = Vec::new();
    encode_error(&mut out, e.id, e.code, &e.message);
    let v = json(&out);
    assert_eq!(v["id"], "c\"9");
    assert_eq!(v["code"], "invalid_user");
}

#[test]
fn message_round_trip_preserves_body() {
    let body_text = r#"{"k": [1, 2.50, "\u00e9"],  "n":null}"#;
    let text = format!(r#"{{"type":"send","id":1,"to":"bob","body":{body_text}}}"#);
    let ClientMessage::Send { body, .. } = parse_client(&text, MAX).unwrap() else {
        panic!("not a send")
    };
    let mut out = b"prefix".to_vec(); // encoders append
    encode_message(&mut out, "srv-\"1\"", "alice@x", body, 1_700_000_000_123);
    assert!(out.starts_with(b"prefix"));
    let out = &out[6..];
    let s = std::str::from_utf8(out).unwrap();
    assert!(s.contains(body_text), "{s}");
    let v = json(out);
    assert_eq!(v["type"], "message");
    assert_eq!(v["id"], "srv-\"1\"");
    assert_eq!(v["from"], "alice@x");
    assert_eq!(v["ts"], 1_700_000_000_123u64);
    assert_eq!(v["body"]["k"][2], "é");
    // And a client parses the gateway's own output as a message it could forward.
    let fwd = format!(r#"{{"type":"send","id":2,"to":"carol","body":{s}}}"#);
    let ClientMessage::Send { body, .. } = parse_client(&fwd, MAX).unwrap() else {
        panic!("not a send")
    };
    assert_eq!(body.get(), s);
}

#[test]
fn unpaired_surrogate_escapes_refused() {
    // serde_json's raw scanner accepts these, strict parsers do not: never forward them.
    for body in [
        r#""\ud800""#,
        r#""\udc00""#,
        r#"{"k":"a\uD83Db"}"#,
        r#"["\ud83d\u0041"]"#,
        r#""\ud83d\\""#,
    ] {
        let text = format!(r#"{{"type":"send","id":"c","to":"bob","body":{body}}}"#);
        assert_eq!(
            err(&text),
            (Some(r#""c""#.into()), ErrorCode::BadJson),
            "{body}"
        );
    }
    for body in [
        r#""\ud83d\ude00""#,
        r#""\uD83D\uDE00 \u00e9 \\u \"""#,
        r#""\\ud800""#,
    ] {
        let text = format!(r#"{{"type":"send","id":"c","to":"bob","body":{body}}}"#);
        let ClientMessage::Send { body: got, .. } = parse_client(&text, MAX).unwrap() else {
            panic!("not a send")
        };
        assert_eq!(got.get(), body);
        let _: Value = serde_json::from_str(got.get()).unwrap();
    }
    let text = r#"{"type":"send","id":"\udfff","to":"bob","body":1}"#;
    assert_eq!(err(text), (None, ErrorCode::BadRequest));
}

#[test]
fn numbers_outside_f64_refused() {
    // Valid JSON, but strict parsers refuse it and JavaScript reads Infinity: never forward.
    for body in ["1e400", r#"{"a":[-1e999]}"#, "[1, 2e308]"] {
        let text = format!(r#"{{"type":"send","id":"c","to":"bob","body":{body}}}"#);
        assert_eq!(
            err(&text),
            (Some(r#""c""#.into()), ErrorCode::BadJson),
            "{body}"
        );
    }
    // Found by fuzzing: an id out of range is not echoed.
    let text = r#"{"type":"e","id":10000000000088639205e514347008}"#;
    assert_eq!(err(text).0, None);
    for body in [
        r#""1e400 inside a string""#,
        "1.7e308",
        "-0.5e-400",
        r#"{"n":123456789012345678901234567890}"#,
    ] {
        let text = format!(r#"{{"type":"send","id":7,"to":"bob","body":{body}}}"#);
        let ClientMessage::Send { body: got, .. } = parse_client(&text, MAX).unwrap() else {
            panic!("not a send")
        };
        let _: Value = serde_json::from_str(got.get()).unwrap();
    }
}

#[test]
fn deeply_nested_bodies_refused() {
    // Valid JSON, but serde_json's `Value` (like other recursive parsers) refuses nesting
    // past its recursion limit: the recipient could not read the message. Never forward it.
    let nest = |d: usize| format!("{}1{}", "[".repeat(d), "]".repeat(d));
    let deep_obj = |d: usize| format!("{}1{}", r#"{"a":"#.repeat(d), "}".repeat(d));
    assert!(
        serde_json::from_str::<Value>(&nest(128)).is_err(),
        "the reason for the limit"
    );
    for body in [
        nest(MAX_BODY_DEPTH + 1),
        nest(10_000),
        deep_obj(MAX_BODY_DEPTH + 1),
        format!(r#"{{"ok":[1,2],"deep":{}}}"#, nest(MAX_BODY_DEPTH)),
    ] {
        let text = format!(r#"{{"type":"send","id":"c","to":"bob","body":{body}}}"#);
        assert_eq!(
            err(&text),
            (Some(r#""c""#.into()), ErrorCode::BadJson),
            "{body}"
        );
    }
    // Up to the limit it is delivered, and the recipient's message parses.
    for body in [
        nest(MAX_BODY_DEPTH),
        deep_obj(MAX_BODY_DEPTH),
        format!(r#"["[[[[{{{{\"]]]]",{}]"#, nest(MAX_BODY_DEPTH - 1)),
    ] {
        let text = format!(r#"{{"type":"send","id":"c","to":"bob","body":{body}}}"#);
        let ClientMessage::Send { body: got, .. } = parse_client(&text, MAX).unwrap() else {
            panic!("not a send")
        };
        let mut out = Vec::new();
        encode_message(&mut out, "s-1", "alice", got, 1);
        let v = json(&out);
        assert!(v["body"].is_array() || v["body"].is_object());
    }
}

#[test]
fn presence_requests() {
    let text = r#"{"type":"presence","id":"p1","users":["alice","bob@x.io","alice"]}"#;
    let ClientMessage::Presence { id, users } = parse_client(text, MAX).unwrap() else {
        panic!("not a presence request")
    };
    assert_eq!(id.get(), r#""p1""#);
    assert_eq!(
        users,
        vec!["alice", "bob@x.io"],
        "duplicates dropped, order kept"
    );
    let many: Vec<String> = (0..=MAX_PRESENCE_USERS)
        .map(|i| format!("\"u{i}\""))
        .collect();
    let too_many = format!(
        r#"{{"type":"presence","id":1,"users":[{}]}}"#,
        many.join(",")
    );
    for (text, code) in [
        (r#"{"type":"presence","id":1}"#, ErrorCode::BadRequest),
        (
            r#"{"type":"presence","id":1,"users":[]}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"presence","id":1,"users":"alice"}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"presence","id":1,"users":[1,2]}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"presence","id":1,"users":["\u0061"]}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"presence","id":1,"users":["a b"]}"#,
            ErrorCode::InvalidUser,
        ),
        (&too_many, ErrorCode::BadRequest),
    ] {
        assert_eq!(err(text), (Some("1".to_owned()), code), "{text}");
    }
    assert_eq!(
        err(r#"{"type":"presence","users":["a"]}"#),
        (None, ErrorCode::BadRequest)
    );
}

#[test]
fn presence_answer_round_trip() {
    use wire::frame::PresenceState::*;
    let mut out = Vec::new();
    let answers = [("alice", Online), ("bob", Offline), ("c\"d", Online)];
    encode_presence(&mut out, &raw(r#""p1""#), answers.iter().copied());
    assert_eq!(
        json(&out),
        serde_json::json!({"type":"presence","id":"p1","online":["alice","c\"d"],"offline":["bob"]})
    );
    out.clear();
    encode_presence(
        &mut out,
        &raw("7"),
        [("x", Unknown), ("y", Offline)].into_iter(),
    );
    assert_eq!(
        json(&out),
        serde_json::json!({"type":"presence","id":7,"online":[],"offline":["y"],"unknown":["x"]})
    );
}

#[test]
fn body_scan_skips_strings_and_reports_numbers_before_depth() {
    let nest = |d: usize| format!("{}1{}", "[".repeat(d), "]".repeat(d));
    let message = |body: &str| {
        let text = format!(r#"{{"type":"send","id":"c","to":"bob","body":{body}}}"#);
        match parse_client(&text, MAX) {
            Ok(m) => panic!("accepted {body}: {m:?}"),
            Err(e) => e.message,
        }
    };
    // Both faults: the number is reported, wherever it is.
    let both = format!("[{}, 1e400]", nest(MAX_BODY_DEPTH + 1));
    assert!(message(&both).contains("double-precision"), "{both}");
    let both = format!("[1e400, {}]", nest(MAX_BODY_DEPTH + 1));
    assert!(message(&both).contains("double-precision"), "{both}");
    assert!(message(&nest(MAX_BODY_DEPTH + 1)).contains("deeper than"));
    // Brackets, quotes, backslashes and number-like text inside strings count for nothing,
    // escaped quotes do not end a string, and a string ending in an escaped backslash does.
    for body in [
        format!(r#"["\"[[[[1e400", "\\", {}]"#, nest(MAX_BODY_DEPTH - 1)),
        r#"{"a\\":"\\\"{{{{","b":[-2.5e10,"]]]]"]}"#.to_string(),
    ] {
        let text = format!(r#"{{"type":"send","id":"c","to":"bob","body":{body}}}"#);
        let ClientMessage::Send { body: got, .. } =
            parse_client(&text, MAX).unwrap_or_else(|e| panic!("refused {body}: {}", e.message))
        else {
            panic!("not a send")
        };
        let _: Value = serde_json::from_str(got.get()).unwrap();
    }
}
