//! Wall-clock time for message timestamps and registry expiries.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// A random u64 from the OS, for ids that must differ across restarts.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // getrandom only fails when the OS has no entropy source at all; fall back to time+pid.
    if getrandom::getrandom(&mut b).is_err() {
        return unix_ms() ^ ((std::process::id() as u64) << 32);
    }
    u64::from_le_bytes(b)
}
