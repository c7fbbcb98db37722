//! A valid channel whose ring bytes and positions come from the fuzzer: the receiver
//! must return messages within bounds or `Corrupt`, never panic or read outside.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmkit::channel::spsc::{self, Config, CONSUMER_LINE, PRODUCER_LINE, RING};
use shmkit::channel::TryRecvError;

fuzz_target!(|data: &[u8]| {
    let capacity = 4096;
    let seg = spsc::create_memfd(&Config { capacity, ..Config::default() }).unwrap();
    let (mut tx, mut rx) = spsc::pair(seg).unwrap();
    let base = tx.segment().as_ptr();
    if data.len() >= 16 {
        // SAFETY: the position words are inside the segment; nobody else maps it.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(PRODUCER_LINE), 8);
            std::ptr::copy_nonoverlapping(data[8..].as_ptr(), base.add(CONSUMER_LINE), 8);
        }
    }
    let ring = &data[data.len().min(16)..];
    // SAFETY: at most `capacity` bytes into the ring area.
    unsafe {
        std::ptr::copy_nonoverlapping(ring.as_ptr(), base.add(RING), ring.len().min(capacity))
    };
    let mut buf = Vec::new();
    for _ in 0..64 {
        match rx.try_recv(&mut buf) {
            Ok(n) => assert!(n <= rx.max_message()),
            Err(TryRecvError::Empty) | Err(TryRecvError::Corrupt { .. }) => break,
            Err(_) => break,
        }
        let _ = tx.try_send(&buf);
    }
});
