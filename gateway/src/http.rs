//! Pure HTTP/1.1 for the client port: parsing a request head (with `httparse`) and writing the
//! few responses the gateway sends, all without I/O.
//!
//! The client port serves `GET /ws` (the WebSocket upgrade, authenticated by a bearer token)
//! and `GET /healthz` (in the local dev mode also the demo page and dev endpoints).
//! [`parse_request`] extracts exactly what those need into a [`RequestHead`]; the caller
//! decides the answer and writes it with [`response_switching`] or [`response`]. Every
//! response except the 101 closes the connection.

use std::io::Write as _;

/// Default limit on a request head (request line + headers + blank line): 8 KiB.
pub const DEFAULT_MAX_HEAD: usize = 8 * 1024;

/// Most header lines accepted in a request head; more is treated like an oversized head.
pub const MAX_HEADERS: usize = 32;

/// The request method, as far as the gateway cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// Anything else (answered 405).
    Other,
}

/// What the gateway needs from a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target up to (not including) any `?`, as sent (not percent-decoded).
    pub path: String,
    /// The raw query string after the first `?` (not percent-decoded; read parameters with
    /// [`query_param`]); `None` when the target has no `?`.
    pub query: Option<String>,
    /// The bearer token: from `Authorization: Bearer X` or else the query parameter `token=X`
    /// (percent-decoded, `+` as space). The header wins when both are present.
    pub token: Option<String>,
    /// `Sec-WebSocket-Key`, trimmed; `None` when absent or not base64 of 16 bytes.
    pub websocket_key: Option<String>,
    /// HTTP/1.1, a `Connection` header listing the `upgrade` token and an `Upgrade` header
    /// listing `websocket` (both case-insensitive, comma-separated lists).
    pub is_upgrade: bool,
    /// `Sec-WebSocket-Version: 13`.
    pub version_ok: bool,
}

/// Why a request head was refused. Both come from the client and end its connection after the
/// error response; neither says anything about the gateway's health.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// No complete head within `max_head` bytes ([`DEFAULT_MAX_HEAD`]), or more than
    /// [`MAX_HEADERS`] header lines. Answer 431 and close.
    #[error("request head too large")]
    TooLarge,
    /// Not an HTTP/1.x request head, or a token that cannot be decoded. Answer 400 and close.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

/// Parses the request head at the start of `buf`.
///
/// * `Ok(Some((head, n)))`: the head is the first `n` bytes of `buf`; bytes after it (a client
///   that pipelines its first WebSocket frames) belong to the next layer.
/// * `Ok(None)`: the head is incomplete and shorter than `max_head`; read more.
/// * `Err(_)`: see [`HttpError`]. At most `max_head` bytes are ever examined.
pub fn parse_request(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let window = &buf[..buf.len().min(max_head)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => return Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooLarge),
        Err(_) => return Err(HttpError::Malformed("invalid HTTP/1.x request head")),
    };

    let method = match req.method {
        Some("GET") => Method::Get,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };

    let mut bearer = None;
    let mut websocket_key = None;
    let mut connection_upgrade = false;
    let mut upgrade_websocket = false;
    let mut version_ok = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("authorization") {
            if bearer.is_none() {
                bearer = bearer_token(h.value)?;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(h.value, "upgrade");
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket |= has_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            if websocket_key.is_none() {
                websocket_key = std::str::from_utf8(h.value)
                    .ok()
                    .map(str::trim)
                    .filter(|k| valid_websocket_key(k))
                    .map(str::to_owned);
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version_ok |= h.value.trim_ascii() == b"13";
        }
    }
    let token = match bearer {
        Some(t) => Some(t),
        None => query
            .map(|q| query_param(q, "token"))
            .transpose()?
            .flatten(),
    };

    Ok(Some((
        RequestHead {
            method,
            path: path.to_owned(),
            query: query.map(str::to_owned),
            token,
            websocket_key,
            is_upgrade: req.version == Some(1) && connection_upgrade && upgrade_websocket,
            version_ok,
        },
        consumed,
    )))
}

/// `Some(token)` for `Bearer <token>` (scheme case-insensitive); `None` for other schemes.
fn bearer_token(value: &[u8]) -> Result<Option<String>, HttpError> {
    let value = std::str::from_utf8(value)
        .map_err(|_| HttpError::Malformed("Authorization header is not UTF-8"))?
        .trim();
    let Some((scheme, rest)) = value.split_once([' ', '\t']) else {
        return Ok(None);
    };
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        Ok(Some(rest.to_owned()))
    } else {
        Ok(None)
    }
}

/// The first `name=value` parameter of a query string (the part after `?`), its value
/// percent-decoded (`+` as space). Only that value is decoded: a bad escape elsewhere in the
/// query does not matter. A parameter without `=` does not count.
pub fn query_param(query: &str, name: &str) -> Result<Option<String>, HttpError> {
    for pair in query.split('&') {
        if let Some((n, value)) = pair.split_once('=') {
            if n == name {
                return percent_decode(value).map(Some);
            }
        }
    }
    Ok(None)
}

/// Decodes `%XX` escapes and `+` (as space, per form encoding); the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, HttpError> {
    const BAD: HttpError = HttpError::Malformed("bad percent-encoding in query");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&b| hex(b)).ok_or(BAD)?;
                let lo = bytes.get(i + 2).and_then(|&b| hex(b)).ok_or(BAD)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| BAD)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// RFC 6455: the key is base64 of 16 bytes, i.e. 22 base64 characters and `==`.
fn valid_websocket_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b.ends_with(b"==")
        && b[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// Appends the `101 Switching Protocols` response accepting a WebSocket upgrade with
/// `websocket_key` (from [`RequestHead::websocket_key`]).
pub fn response_switching(out: &mut Vec<u8>, websocket_key: &str) {
    let accept = tungstenite::handshake::derive_accept_key(websocket_key.as_bytes());
    out.reserve(130);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends a complete response with `Content-Type` (omitted when `content_type` is empty),
/// `Content-Length`, `Connection: close`, then `extra_headers` and `body`. CR and LF are
/// dropped from the reason and header names/values so no caller can split the response.
pub fn response(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    extra_headers: &[(&str, &str)],
) {
    let extra: usize = extra_headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum();
    out.reserve(96 + reason.len() + content_type.len() + extra + body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} ");
    put_field(out, reason);
    out.extend_from_slice(b"\r\n");
    if !content_type.is_empty() {
        put_header(out, "Content-Type", content_type);
    }
    let _ = write!(out, "Content-Length: {}\r\n", body.len());
    out.extend_from_slice(b"Connection: close\r\n");
    for (name, value) in extra_headers {
        put_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

fn put_header(out: &mut Vec<u8>, name: &str, value: &str) {
    put_field(out, name);
    out.extend_from_slice(b": ");
    put_field(out, value);
    out.extend_from_slice(b"\r\n");
}

fn put_field(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().filter(|&b| b != b'\r' && b != b'\n'));
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade(target: &str, extra: &str) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
             {extra}\r\n"
        )
    }

    fn parse(s: &str) -> RequestHead {
        let (head, n) = parse_request(s.as_bytes(), DEFAULT_MAX_HEAD)
            .unwrap()
            .unwrap();
        assert_eq!(n, s.len());
        head
    }

    #[test]
    fn full_upgrade_request() {
        let head = parse(&upgrade("/ws?x=1&token=abc.def-_.g", ""));
        assert_eq!(
            head,
            RequestHead {
                method: Method::Get,
                path: "/ws".into(),
                query: Some("x=1&token=abc.def-_.g".into()),
                token: Some("abc.def-_.g".into()),
                websocket_key: Some(KEY.into()),
                is_upgrade: true,
                version_ok: true,
            }
        );
    }

    #[test]
    fn split_heads_need_more_bytes() {
        let req = upgrade("/ws", "Authorization: Bearer t0k\r\n");
        let bytes = req.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(
                parse_request(&bytes[..cut], DEFAULT_MAX_HEAD),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert_eq!(parse(&req).token.as_deref(), Some("t0k"));
    }

    #[test]
    fn trailing_bytes_are_not_consumed() {
        let req = upgrade("/ws", "");
        let mut bytes = req.clone().into_bytes();
        bytes.extend_from_slice(&[0x81, 0x85, 1, 2, 3]);
        let (_, n) = parse_request(&bytes, DEFAULT_MAX_HEAD).unwrap().unwrap();
        assert_eq!(n, req.len());
    }

    #[test]
    fn bearer_header_wins_over_query() {
        let head = parse(&upgrade(
            "/ws?token=fromquery",
            "authorization: bearer   fromheader \r\n",
        ));
        assert_eq!(head.token.as_deref(), Some("fromheader"));
        let head = parse(&upgrade(
            "/ws?token=fromquery",
            "Authorization: Basic dXNlcjpwdw==\r\n",
        ));
        assert_eq!(head.token.as_deref(), Some("fromquery"));
        let head = parse(&upgrade("/ws", "Authorization: Bearer\r\n"));
        assert_eq!(head.token, None);
        let head = parse(&upgrade("/ws?tokens=x&xtoken=y", ""));
        assert_eq!(head.token, None);
    }

    #[test]
    fn query_token_percent_decoded() {
        let head = parse(&upgrade("/ws?token=a%2Eb%2ec%20d+e%C3%A9", ""));
        assert_eq!(head.token.as_deref(), Some("a.b.c d eé"));
        for bad in ["%", "%4", "%zz", "%C3"] {
            let req = upgrade(&format!("/ws?token={bad}"), "");
            assert!(
                matches!(
                    parse_request(req.as_bytes(), DEFAULT_MAX_HEAD),
                    Err(HttpError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // A bad escape elsewhere in the query does not matter.
        assert_eq!(
            parse(&upgrade("/ws?x=%zz&token=ok", "")).token.as_deref(),
            Some("ok")
        );
    }

    #[test]
    fn query_string_and_params() {
        assert_eq!(parse(&upgrade("/ws", "")).query, None);
        assert_eq!(parse(&upgrade("/ws?", "")).query.as_deref(), Some(""));
        let head = parse("GET /dev/online?users=a,b%2Cc&user=x+y&n&users=z HTTP/1.1\r\n\r\n");
        assert_eq!(head.path, "/dev/online");
        let q = head.query.as_deref().unwrap();
        assert_eq!(q, "users=a,b%2Cc&user=x+y&n&users=z");
        assert_eq!(query_param(q, "users"), Ok(Some("a,b,c".into())));
        assert_eq!(query_param(q, "user"), Ok(Some("x y".into())));
        assert_eq!(query_param(q, "n"), Ok(None));
        assert_eq!(query_param(q, "missing"), Ok(None));
        assert_eq!(query_param("u=", "u"), Ok(Some(String::new())));
        assert!(matches!(
            query_param("u=%G1", "u"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn missing_or_bad_key() {
        let req = "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
        let head = parse(req);
        assert_eq!(head.websocket_key, None);
        assert!(head.is_upgrade && head.version_ok);
        for key in [
            "short",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZ!==",
            "",
        ] {
            let req = format!("GET /ws HTTP/1.1\r\nSec-WebSocket-Key: {key}\r\n\r\n");
            assert_eq!(parse(&req).websocket_key, None, "{key}");
        }
    }

    #[test]
    fn not_upgrade() {
        let head = parse("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path, "/healthz");
        assert!(!head.is_upgrade && !head.version_ok);
        assert_eq!(head.token, None);

        let head =
            parse("GET /ws HTTP/1.1\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n\r\n");
        assert!(!head.is_upgrade);
        let head = parse("GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n");
        assert!(!head.is_upgrade);
        let head = parse("GET /ws HTTP/1.1\r\nConnection: upgraded\r\nUpgrade: websocket\r\n\r\n");
        assert!(!head.is_upgrade);
        let head = parse("GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(!head.is_upgrade);
        // Case-insensitive, listed among others, header repeated.
        let head = parse(
            "GET /ws HTTP/1.1\r\nconnection: keep-alive\r\nCONNECTION: foo , UpGrAdE\r\n\
             upgrade: WebSocket\r\nSec-WebSocket-Version: 8, 13\r\n\r\n",
        );
        assert!(head.is_upgrade);
        assert!(!head.version_ok);
        let head = parse("POST /ws HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(head.method, Method::Other);
    }

    #[test]
    fn oversize_head() {
        let mut req = b"GET /ws HTTP/1.1\r\nX-Pad: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 200));
        assert_eq!(parse_request(&req, 100), Err(HttpError::TooLarge));
        assert_eq!(parse_request(&req[..99], 100), Ok(None));
        // Complete within the limit even though more bytes follow.
        let ok = b"GET / HTTP/1.1\r\n\r\nrest-of-stream";
        assert!(matches!(parse_request(ok, 18), Ok(Some((_, 18)))));
        assert_eq!(parse_request(ok, 17), Err(HttpError::TooLarge));
        // Too many header lines.
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            parse_request(many.as_bytes(), DEFAULT_MAX_HEAD),
            Err(HttpError::TooLarge)
        );
    }

    #[test]
    fn garbage_bytes() {
        for junk in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"\x00\x00\x00\x05\x01",
            b"GET /ws HTTP/2.0\r\n\r\n",
            b"GET /ws FTP/1.1\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nBad Header\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nX: \x01\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_request(junk, DEFAULT_MAX_HEAD),
                    Err(HttpError::Malformed(_))
                ),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn switching_response() {
        let mut out = Vec::new();
        response_switching(&mut out, KEY);
        let s = String::from_utf8(out).unwrap();
        // The example from RFC 6455 section 1.3.
        assert_eq!(
            s,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn plain_response() {
        let mut out = b"prev".to_vec();
        response(
            &mut out,
            401,
            "Unauthorized",
            "text/plain; charset=utf-8",
            b"missing token\n",
            &[
                ("WWW-Authenticate", "Bearer"),
                ("X-Evil", "a\r\nSet-Cookie: x"),
            ],
        );
        let s = std::str::from_utf8(&out[4..]).unwrap();
        assert_eq!(
            s,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 14\r\nConnection: close\r\nWWW-Authenticate: Bearer\r\n\
             X-Evil: aSet-Cookie: x\r\n\r\nmissing token\n"
        );
        // It parses as a response.
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp.parse(&out[4..]).unwrap().is_complete());
        assert_eq!(resp.code, Some(401));

        let mut out = Vec::new();
        response(&mut out, 204, "No Content", "", b"", &[]);
        assert_eq!(
            out,
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
}
