//! Opens a channel whose header, endpoints and positions come from the fuzzer.
//! Errors are fine; panics, hangs and out-of-bounds accesses are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmkit::channel::spsc::{self, Config, RING};
use shmkit::channel::{Receiver, Sender};

fuzz_target!(|data: &[u8]| {
    // A header whose magic and state are both zero reads as "creator still
    // initialising", and an opener rightly waits its 2 s for it: skip those inputs so
    // the fuzzer spends its time on everything else.
    let zero = |r: std::ops::Range<usize>| data.get(r).is_some_and(|b| b.iter().all(|&x| x == 0));
    if zero(0..8) && zero(56..60) {
        return;
    }
    let seg = spsc::create_memfd(&Config { capacity: 4096, ..Config::default() }).unwrap();
    let n = data.len().min(RING);
    // SAFETY: n <= RING < the segment's length; nobody else maps this memfd.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), seg.as_ptr(), n) };
    let as_sender = data.first().is_some_and(|b| b & 1 == 1);
    if as_sender {
        if let Ok(mut tx) = Sender::from_segment(seg) {
            let _ = tx.try_send(b"fuzz");
        }
    } else if let Ok(mut rx) = Receiver::from_segment(seg) {
        let mut buf = Vec::new();
        for _ in 0..8 {
            let _ = rx.try_recv(&mut buf);
        }
    }
});
