//! Criterion benchmarks of Connect's protocol code, over in-memory buffers only, with the heap
//! allocations each operation makes.
//!
//! # Layout
//!
//! * `src/lib.rs` (this file): [`Counting`], a global allocator that counts allocations, and
//!   [`allocs_per_op`], which every bench uses to print `allocs/op <name> <n>` next to
//!   criterion's timings.
//! * `benches/ws.rs`: the gateway's WebSocket decoder (`wire::ws`) on masked client frames,
//!   one and 64 per buffer, and server frame encoding.
//! * `benches/frame.rs`: router<->gateway frame encode/decode (`Send`, `Deliver`, a batch of 64).
//! * `benches/client_json.rs`: client JSON `parse_client` and `encode_message`.
//! * `benches/jwt.rs`: HS256 token verification.
//! * RESP encode/decode and reply matching are in `resp-client/benches/codec.rs`, next to
//!   the client they measure; they use the same counter.
//!
//! Run with `cargo bench -p benches -p resp-client` (add `-- --quick` for a fast pass).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting every allocation and reallocation (a reallocation may move,
/// which costs what an allocation does). Install it in a bench binary with
/// `#[global_allocator] static A: benches::Counting = benches::Counting;`.
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded from the caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded from the caller's contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded from the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations so far in this process (only counts with [`Counting`] installed).
pub fn allocations() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// Runs `routine` on a fresh `setup()` input `n` times, counting only the routine's
/// allocations (the output is dropped outside the count too), prints
/// `allocs/op <name> <average>` and returns the average.
pub fn allocs_per_op<I, R>(
    name: &str,
    n: u64,
    mut setup: impl FnMut() -> I,
    mut routine: impl FnMut(I) -> R,
) -> f64 {
    let mut total = 0;
    for _ in 0..n {
        let input = setup();
        let before = allocations();
        let out = routine(input);
        total += allocations() - before;
        drop(out);
    }
    let per = total as f64 / n.max(1) as f64;
    println!("allocs/op {name} {per:.2}");
    per
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static A: Counting = Counting;

    #[test]
    fn counts_the_routine_only() {
        // The setup's vector and the dropped output are not counted; the routine's are.
        let per = allocs_per_op(
            "test",
            10,
            || vec![1u8; 64],
            |v| {
                let w = v.clone();
                let s = format!("{}", w.len());
                (w, s)
            },
        );
        assert_eq!(per, 2.0);
        assert_eq!(allocs_per_op("none", 5, || 3u32, |x| x + 1), 0.0);
    }
}
