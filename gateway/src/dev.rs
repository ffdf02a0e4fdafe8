//! The local dev mode's extras on the client port, served only when [`Config::dev_mode`] is set
//! (the all-in-one `connect` binary with the embedded `memory://` registry; never a deployed
//! gateway):
//!
//! - `GET /` and `GET /demo`: the demo web chat (`demo.html`, plain HTML/JS, embedded).
//! - `GET /dev/token?user=NAME`: `{"user":NAME,"token":JWT}`, a token signed with the gateway's
//!   own secret for any valid user id (400 otherwise).
//! - `GET /dev/online?users=a,b,c`: `{"online":["a",...]}`, the listed users (at most
//!   [`MAX_ONLINE_USERS`]) that have a live session in the registry.
//!
//! Answers are built by pure functions; only the registry lookups are asynchronous.
//!
//! [`Config::dev_mode`]: crate::config::Config::dev_mode

use std::time::Duration;

use futures_lite::future;
use registry::SessionEntry;
use serde_json::json;

use crate::http::{self, RequestHead};
use crate::shard::Shard;

/// The demo chat page.
const DEMO_HTML: &str = include_str!("demo.html");
/// Most users one `/dev/online` request may ask about (each is one registry lookup).
pub const MAX_ONLINE_USERS: usize = 50;
/// Dev tokens are valid for a working day; the demo fetches a fresh one on every connect.
const DEV_TOKEN_SECS: u64 = 12 * 3600;
/// `/dev/online` answers 503 when its lookups take longer than this.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// One complete answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, reason: &'static str, value: serde_json::Value) -> Reply {
        Reply {
            status,
            reason,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    fn bad_request(message: &str) -> Reply {
        Reply::json(400, "Bad Request", json!({ "error": message }))
    }

    /// The HTTP response bytes (the connection closes after it).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 200);
        http::response(
            &mut out,
            self.status,
            self.reason,
            self.content_type,
            &self.body,
            &[
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
            ],
        );
        out
    }
}

/// Answers a dev-mode request (`req.path` is one of `/`, `/demo`, `/dev/token`,
/// `/dev/online`) and returns the response bytes to write.
pub async fn handle(shard: &Shard, req: &RequestHead) -> Vec<u8> {
    let query = req.query.as_deref();
    let reply = match req.path.as_str() {
        "/" | "/demo" => demo_page(),
        "/dev/token" => token_reply(&shard.cfg.jwt_secret, query, runtime::clock::unix_secs()),
        "/dev/online" => match parse_users(query) {
            Ok(users) => online(shard, &users).await,
            Err(message) => Reply::bad_request(&message),
        },
        _ => Reply::json(404, "Not Found", json!({ "error": "not found" })),
    };
    reply.encode()
}

fn demo_page() -> Reply {
    Reply {
        status: 200,
        reason: "OK",
        content_type: "text/html; charset=utf-8",
        body: DEMO_HTML.as_bytes().to_vec(),
    }
}

/// `/dev/token?user=NAME`: a token for NAME valid from `now` for [`DEV_TOKEN_SECS`].
fn token_reply(secret: &[u8], query: Option<&str>, now: u64) -> Reply {
    let user = match query.map(|q| http::query_param(q, "user")) {
        Some(Ok(Some(u))) => u,
        Some(Err(_)) => return Reply::bad_request("bad percent-encoding in `user`"),
        _ => return Reply::bad_request("missing `user` parameter"),
    };
    if !wire::user::valid_user_id(&user) {
        return Reply::bad_request("`user` must be 1-128 bytes of [A-Za-z0-9._@+:-]");
    }
    let token = auth::dev_token(secret, &user, DEV_TOKEN_SECS, now);
    Reply::json(200, "OK", json!({ "user": user, "token": token }))
}

/// The `users` parameter: comma-separated user ids, empty items skipped, duplicates dropped,
/// at most [`MAX_ONLINE_USERS`]. A missing parameter is an empty list.
fn parse_users(query: Option<&str>) -> Result<Vec<String>, String> {
    let raw = match query.map(|q| http::query_param(q, "users")) {
        Some(Ok(Some(u))) => u,
        Some(Err(_)) => return Err("bad percent-encoding in `users`".into()),
        _ => return Ok(Vec::new()),
    };
    let mut users: Vec<String> = Vec::new();
    for u in raw.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        if !wire::user::valid_user_id(u) {
            return Err(format!("`{}` is not a valid user id", u.escape_debug()));
        }
        if !users.iter().any(|x| x == u) {
            users.push(u.to_owned());
        }
        if users.len() > MAX_ONLINE_USERS {
            return Err(format!("at most {MAX_ONLINE_USERS} users per request"));
        }
    }
    Ok(users)
}

/// Looks every user up (all lookups are issued before the first is awaited, so with Redis
/// they share one pipelined round trip) and answers with those that have a live session.
async fn online(shard: &Shard, users: &[String]) -> Reply {
    let lookups: Vec<_> = users.iter().map(|u| shard.registry.lookup(u)).collect();
    let results = future::or(
        async {
            let mut results = Vec::with_capacity(lookups.len());
            for l in lookups {
                results.push(l.await);
            }
            Some(results)
        },
        async {
            runtime::rt::sleep(LOOKUP_TIMEOUT).await;
            None
        },
    )
    .await;
    match results {
        Some(results) => online_reply(users, results),
        None => Reply::json(
            503,
            "Service Unavailable",
            json!({ "error": "session registry timed out" }),
        ),
    }
}

fn online_reply(
    users: &[String],
    results: Vec<Result<Vec<SessionEntry>, registry::Error>>,
) -> Reply {
    let mut online = Vec::new();
    for (user, result) in users.iter().zip(results) {
        match result {
            Ok(sessions) if !sessions.is_empty() => online.push(user.as_str()),
            Ok(_) => {}
            Err(e) => {
                let error = format!("session registry unavailable: {e}");
                return Reply::json(503, "Service Unavailable", json!({ "error": error }));
            }
        }
    }
    Reply::json(200, "OK", json!({ "online": online }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"dev-test-secret-0123456789";

    fn body(r: &Reply) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn entry(user: &str) -> SessionEntry {
        SessionEntry {
            user: user.into(),
            session: 7,
            instance: "gw".into(),
            epoch: 1,
            shard: 0,
            addr: "127.0.0.1:7200".into(),
        }
    }

    #[test]
    fn token_for_a_valid_user_verifies() {
        let now = 1_764_201_600;
        let r = token_reply(SECRET, Some("x=1&user=alice%2Bdev"), now);
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "application/json");
        let v = body(&r);
        assert_eq!(v["user"], "alice+dev");
        let token = v["token"].as_str().unwrap();
        let claims = auth::verify_hs256(SECRET, token, now + 60, 0).unwrap();
        assert_eq!(claims.sub, "alice+dev");
        assert_eq!(claims.exp, now + DEV_TOKEN_SECS);
    }

    #[test]
    fn token_refuses_bad_users_with_400() {
        let long = format!("user={}", "a".repeat(129));
        for q in [
            None,
            Some(""),
            Some("users=alice"),
            Some("user="),
            Some("user=a+b"),
            Some("user=%G0"),
            Some("user=%C3%A9"),
            Some("user=a/b"),
            Some(long.as_str()),
        ] {
            let r = token_reply(SECRET, q, 0);
            assert_eq!(r.status, 400, "{q:?}");
            assert!(body(&r)["error"].is_string(), "{q:?}");
        }
    }

    #[test]
    fn users_list_parsing() {
        assert_eq!(parse_users(None), Ok(vec![]));
        assert_eq!(parse_users(Some("users=")), Ok(vec![]));
        assert_eq!(
            parse_users(Some("users=bob,alice,,bob%2Ccarol,")),
            Ok(vec!["bob".into(), "alice".into(), "carol".into()])
        );
        assert!(parse_users(Some("users=bob,no%20spaces")).is_err());
        assert!(parse_users(Some("users=%zz")).is_err());
        let fifty: Vec<String> = (0..MAX_ONLINE_USERS).map(|i| format!("u{i}")).collect();
        let q = format!("users={}", fifty.join(","));
        assert_eq!(parse_users(Some(&q)).unwrap().len(), MAX_ONLINE_USERS);
        assert!(parse_users(Some(&format!("{q},one-more"))).is_err());
        // Duplicates do not count twice.
        assert!(parse_users(Some(&format!("{q},u0"))).is_ok());
    }

    #[test]
    fn online_lists_users_with_sessions() {
        let users = vec!["alice".to_string(), "bob".into(), "carol".into()];
        let r = online_reply(
            &users,
            vec![
                Ok(vec![entry("alice")]),
                Ok(vec![]),
                Ok(vec![entry("carol")]),
            ],
        );
        assert_eq!(r.status, 200);
        assert_eq!(body(&r), json!({"online": ["alice", "carol"]}));
        let r = online_reply(&[], vec![]);
        assert_eq!(body(&r), json!({"online": []}));
        let r = online_reply(
            &users[..1],
            vec![Err(registry::Error::InvalidUser("x".into()))],
        );
        assert_eq!(r.status, 503);
    }

    #[test]
    fn replies_encode_as_http() {
        let r = demo_page().encode();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(text.contains("Cache-Control: no-store\r\n"));
        assert!(text.contains("<!doctype html>"));
        let r = Reply::bad_request("nope").encode();
        assert!(String::from_utf8(r)
            .unwrap()
            .ends_with("\r\n\r\n{\"error\":\"nope\"}"));
    }
}
