//! Client JSON parser over arbitrary UTF-8, with a small `max_body`.
//!
//! Properties: no panic; an accepted message honours every rule (valid `to`, body within the
//! limit, id a short string or number) and the gateway's encoders turn it (or the error) into
//! valid JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wire::client::{self, ClientMessage, MAX_ID_LEN};
use wire::frame::PresenceState;
use wire::AckStatus;

const MAX_BODY: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut out = Vec::new();
    match client::parse_client(text, MAX_BODY) {
        Ok(ClientMessage::Send { id, to, body }) => {
            assert!(wire::valid_user_id(to));
            assert!(body.get().len() <= MAX_BODY);
            assert!(id.get().len() <= MAX_ID_LEN);
            let id_value: Value = serde_json::from_str(id.get()).expect("id is JSON");
            assert!(id_value.is_string() || id_value.is_number());
            client::encode_message(&mut out, "sid", to, body, 1);
            let v: Value = serde_json::from_slice(&out).expect("message is JSON");
            assert_eq!(v["from"].as_str(), Some(to));
            out.clear();
            client::encode_ack(&mut out, id, AckStatus::Delivered, Some(text));
            serde_json::from_slice::<Value>(&out).expect("ack is JSON");
        }
        Ok(ClientMessage::Presence { id, users }) => {
            assert!(!users.is_empty() && users.len() <= client::MAX_PRESENCE_USERS);
            assert!(users.iter().all(|u| wire::valid_user_id(u)));
            let states = [
                PresenceState::Online,
                PresenceState::Offline,
                PresenceState::Unknown,
            ];
            let answers = users.iter().enumerate().map(|(i, u)| (*u, states[i % 3]));
            client::encode_presence(&mut out, id, answers);
            let v: Value = serde_json::from_slice(&out).expect("presence answer is JSON");
            let listed = ["online", "offline", "unknown"]
                .iter()
                .filter_map(|k| v[*k].as_array())
                .map(Vec::len)
                .sum::<usize>();
            assert_eq!(listed, users.len());
        }
        Err(e) => {
            client::encode_error(&mut out, e.id, e.code, &e.message);
            let v: Value = serde_json::from_slice(&out).expect("error is JSON");
            assert_eq!(v["code"].as_str(), Some(e.code.as_str()));
        }
    }
});
