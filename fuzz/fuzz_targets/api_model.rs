//! Sequences of API calls chosen by the fuzzer, checked against models: an SPSC pair
//! against a FIFO, and a backpressured broadcast channel with two subscribers against
//! a FIFO per subscriber. What succeeds must agree with the model; `Full` and `Empty`
//! only when the model says so; nothing may panic.
#![no_main]

use std::collections::VecDeque;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmkit::channel::broadcast::{self, Overflow};
use shmkit::channel::spsc::{self, Config};
use shmkit::channel::{SendTimeoutError, TryRecvError, TrySendError};

fn message(step: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i ^ step) as u8).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, ops)) = data.split_first() else { return };
    if shape & 1 == 0 {
        spsc_model(shape, ops);
    } else {
        broadcast_model(ops);
    }
});

fn spsc_model(shape: u8, ops: &[u8]) {
    let capacity = 256 << (shape >> 1) % 4;
    let seg = spsc::create_memfd(&Config { capacity, ..Config::default() }).unwrap();
    let (mut tx, mut rx) = spsc::pair(seg).unwrap();
    let max = tx.max_message();
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let mut buf = Vec::new();
    for (step, pair) in ops.chunks(2).enumerate() {
        let op = pair[0] % 6;
        let len = usize::from(*pair.get(1).unwrap_or(&0)) * (max + 8) / 255;
        let msg = message(step, len);
        match op {
            0 => match tx.try_send(&msg) {
                Ok(()) => model.push_back(msg),
                Err(TrySendError::TooLarge { .. }) => assert!(len > max),
                Err(TrySendError::Full(_)) => assert!(!model.is_empty()),
                Err(e) => panic!("{e}"),
            },
            1 => match tx.try_loan(len) {
                Ok(mut g) => {
                    g[..len].copy_from_slice(&msg);
                    let keep = len / 2;
                    g.commit(keep);
                    model.push_back(msg[..keep].to_vec());
                }
                Err(TrySendError::TooLarge { .. }) => assert!(len > max),
                Err(TrySendError::Full(_)) => assert!(!model.is_empty()),
                Err(e) => panic!("{e}"),
            },
            2 => match rx.try_recv(&mut buf) {
                Ok(_) => assert_eq!(Some(&buf), model.pop_front().as_ref()),
                Err(TryRecvError::Empty) => assert!(model.is_empty()),
                Err(e) => panic!("{e}"),
            },
            3 => match rx.try_recv_ref() {
                Ok(g) => assert_eq!(Some(&g[..]), model.pop_front().as_deref()),
                Err(TryRecvError::Empty) => assert!(model.is_empty()),
                Err(e) => panic!("{e}"),
            },
            // A send that may wait (here: not at all) looks at the release hint first,
            // but must still find any room there is.
            4 => match tx.send_timeout(&msg, Duration::ZERO) {
                Ok(()) => model.push_back(msg),
                Err(SendTimeoutError::TooLarge { .. }) => assert!(len > max),
                Err(SendTimeoutError::Timeout(_)) => assert!(!model.is_empty()),
                Err(e) => panic!("{e}"),
            },
            _ => {
                let most = usize::from(*pair.get(1).unwrap_or(&0)) % 8 + 1;
                match rx.try_recv_batch(most, |m| assert_eq!(Some(m), model.pop_front().as_deref())) {
                    Ok(n) => assert!((1..=most).contains(&n)),
                    Err(TryRecvError::Empty) => assert!(model.is_empty()),
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
}

fn broadcast_model(ops: &[u8]) {
    let config = broadcast::Config {
        slots: 8,
        max_message: 64,
        subscribers: 2,
        overflow: Overflow::Backpressure,
        ..broadcast::Config::default()
    };
    let (mut p, mut subs) = broadcast::local(broadcast::create_memfd(&config).unwrap(), 2).unwrap();
    let mut models: [VecDeque<Vec<u8>>; 2] = Default::default();
    let mut buf = Vec::new();
    for (step, pair) in ops.chunks(2).enumerate() {
        let len = usize::from(*pair.get(1).unwrap_or(&0)) % 80;
        match pair[0] % 3 {
            0 => {
                let msg = message(step, len);
                match p.try_send(&msg) {
                    Ok(()) => models.iter_mut().for_each(|m| m.push_back(msg.clone())),
                    Err(TrySendError::TooLarge { .. }) => assert!(len > 64),
                    Err(TrySendError::Full(_)) => assert!(models.iter().any(|m| m.len() >= 8)),
                    Err(e) => panic!("{e}"),
                }
            }
            k => {
                let i = usize::from(k - 1);
                match subs[i].try_recv(&mut buf) {
                    Ok(_) => assert_eq!(Some(&buf), models[i].pop_front().as_ref()),
                    Err(broadcast::TryRecvError::Empty) => assert!(models[i].is_empty()),
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
}
