//! A valid broadcast channel whose publisher line, cursor lines and slots come from the
//! fuzzer: subscribers and the publisher must return messages within bounds, `Lagged`
//! or `Corrupt`, never panic or read outside.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmkit::channel::broadcast::{self, Overflow};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else { return };
    let overflow = if mode & 1 == 0 { Overflow::Overwrite } else { Overflow::Backpressure };
    let config =
        broadcast::Config { slots: 4, max_message: 48, subscribers: 2, overflow, ..Default::default() };
    let seg = broadcast::create_memfd(&config).unwrap();
    let (mut p, mut subs) = broadcast::local(seg, 2).unwrap();
    let geo = p.geometry();
    let base = p.segment().as_ptr();
    // Everything from the publisher line to the end: head, cursors, slot headers, data.
    let from = geo.publisher_line();
    let room = p.segment().len() - from;
    // SAFETY: at most `room` bytes from `from`, inside the segment; nobody else maps it.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(from), bytes.len().min(room)) };
    let mut buf = Vec::new();
    for round in 0..16 {
        for s in &mut subs {
            if let Ok(n) = s.try_recv(&mut buf) {
                assert!(n <= 48);
            }
        }
        if round % 4 == 0 {
            let _ = p.try_send(&[round as u8; 20]);
        }
    }
});
