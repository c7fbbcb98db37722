//! A valid MPSC channel whose receiver line and lanes (positions, hints, frames) come
//! from the fuzzer: the receiver and the senders must return messages within bounds,
//! `Empty`, `Full` or `Corrupt`, never panic or read outside the segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmkit::channel::mpsc;

fuzz_target!(|data: &[u8]| {
    let config = mpsc::Config { senders: 3, capacity: 256, ..Default::default() };
    let Ok((mut rx, mut txs)) = mpsc::local(&config, 2) else { return };
    let shape = rx.shape();
    let base = rx.segment().as_ptr();
    // Everything from the receiver line to the end: lanes_used, every lane's lines and
    // ring bytes.
    let from = shape.receiver_line();
    let room = rx.segment().len() - from;
    // SAFETY: at most `room` bytes from `from`, inside the segment; nobody else maps it.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(from), data.len().min(room)) };
    let max = rx.max_message();
    let mut buf = Vec::new();
    for round in 0..16u8 {
        if let Ok(n) = rx.try_recv(&mut buf) {
            assert!(n <= max);
        }
        if let Ok(g) = rx.try_recv_ref() {
            assert!(g.len() <= max && (1..=3).contains(&g.sender()));
        }
        let tx = &mut txs[usize::from(round) % 2];
        let _ = tx.try_send(&[round; 20]);
    }
});
