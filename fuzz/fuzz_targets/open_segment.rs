//! Opens a channel whose header, endpoints and positions come from the fuzzer.
//! Errors are fine; panics, hangs and out-of-bounds accesses are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmkit::channel::spsc::{self, Config, RING};
use shmkit::channel::{Receiver, Sender};

fuzz_target!(|data: &[u8]| {
    // A header put in state EMPTY or INITIALISING, whose recorded creator may be alive (pid 0
    // while it writes the header, a live pid, or no start time) makes an opener rightly
    // wait its 2 s for the creator: skip those states so the fuzzer spends its time on
    // everything else (tests/segments.rs covers the waiting itself).
    // The input overwrites the first bytes of a READY header: the state word is the
    // input's bytes where it reaches offsets 56..60, READY's elsewhere.
    let mut state = shmkit::layout::state::READY.to_le_bytes();
    for (i, b) in state.iter_mut().enumerate() {
        if let Some(&d) = data.get(56 + i) {
            *b = d;
        }
    }
    if u32::from_le_bytes(state) <= shmkit::layout::state::INITIALISING {
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
