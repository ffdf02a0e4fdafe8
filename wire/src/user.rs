//! User ids: the one syntax both protocols and the registry agree on.

/// Longest user id, in bytes.
pub const MAX_USER_LEN: usize = 128;

/// Whether `s` is a valid user id: 1 to [`MAX_USER_LEN`] bytes, each of `[A-Za-z0-9._@+:-]`.
///
/// The alphabet needs no escaping in JSON, in Redis keys or in URLs' query strings, which is
/// why it is this narrow.
pub fn valid_user_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_USER_LEN && s.bytes().all(is_user_byte)
}

fn is_user_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b':' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_alphabet() {
        assert!(valid_user_id("a"));
        assert!(valid_user_id("alice.smith_1@example.com+tag:x-y"));
        assert!(valid_user_id(&"z".repeat(MAX_USER_LEN)));
    }

    #[test]
    fn rejects_the_rest() {
        assert!(!valid_user_id(""));
        assert!(!valid_user_id(&"z".repeat(MAX_USER_LEN + 1)));
        for bad in ["a b", "a/b", "a\"b", "a\\b", "é", "a\0", "a\n", "a,b", "*"] {
            assert!(!valid_user_id(bad), "{bad:?}");
        }
    }
}
