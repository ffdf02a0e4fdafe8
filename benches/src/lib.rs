//! Criterion benchmarks of Connect's protocol code, over in-memory buffers only.
//!
//! # Layout
//!
//! * `benches/frame.rs`: router<->gateway frame encode/decode (`Send`, `Deliver`, a batch of 64).
//! * `benches/client_json.rs`: client JSON `parse_client` and `encode_message`.
//! * `benches/jwt.rs`: HS256 token verification.
//!
//! Run with `cargo bench -p benches` (add `-- --quick` for a fast pass).
