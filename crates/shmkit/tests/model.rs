//! Random sequences of channel operations checked against a model (a FIFO queue of the
//! messages sent): whatever succeeds must agree with the model, `Empty` only when the
//! model is empty, and nothing may panic. Deterministic seeds; set SHMKIT_MODEL_SEEDS
//! to run more.

mod common;

use std::collections::VecDeque;

use common::mix;
use shmkit::channel::spsc::{self, Config};
use shmkit::channel::{TryRecvError, TrySendError};

#[test]
fn random_operation_sequences_agree_with_a_fifo_model() {
    let seeds: u64 =
        std::env::var("SHMKIT_MODEL_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    for seed in 0..seeds {
        let mut rng = mix(seed + 1);
        let mut next = || {
            rng = mix(rng);
            rng
        };
        let capacity = 256 << (next() % 5);
        let (mut tx, mut rx) =
            spsc::pair(spsc::create_memfd(&Config { capacity, ..Config::default() }).unwrap())
                .unwrap();
        let max = tx.max_message();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut buf = Vec::new();
        for step in 0..2000u32 {
            let op = next() % 6;
            let len = (next() % (max as u64 + 20)) as usize; // sometimes too large
            let msg: Vec<u8> = (0..len).map(|i| (i as u32 ^ (step + 1)) as u8).collect();
            let ctx = format!("seed {seed} step {step} op {op} len {len}");
            match op {
                0 | 1 => match tx.try_send(&msg) {
                    Ok(()) => model.push_back(msg),
                    Err(TrySendError::TooLarge { .. }) => assert!(len > max, "{ctx}"),
                    Err(TrySendError::Full(_)) => {
                        assert!(!model.is_empty(), "{ctx}: full while empty")
                    }
                    Err(e) => panic!("{ctx}: {e}"),
                },
                2 => match tx.try_loan(len) {
                    Ok(mut g) => {
                        let commit = next() % 3 != 0;
                        g[..len].copy_from_slice(&msg);
                        let keep = (next() as usize) % (len + 1);
                        if commit {
                            g.commit(keep);
                            model.push_back(msg[..keep].to_vec());
                        }
                    }
                    Err(TrySendError::TooLarge { .. }) => assert!(len > max, "{ctx}"),
                    Err(TrySendError::Full(_)) => {
                        assert!(!model.is_empty(), "{ctx}: full while empty")
                    }
                    Err(e) => panic!("{ctx}: {e}"),
                },
                3 | 4 => match rx.try_recv(&mut buf) {
                    Ok(_) => assert_eq!(Some(&buf), model.pop_front().as_ref(), "{ctx}"),
                    Err(TryRecvError::Empty) => {
                        assert!(model.is_empty(), "{ctx}: empty with {} queued", model.len())
                    }
                    Err(e) => panic!("{ctx}: {e}"),
                },
                _ => match rx.try_recv_ref() {
                    Ok(g) => assert_eq!(Some(&g.to_vec()), model.pop_front().as_ref(), "{ctx}"),
                    Err(TryRecvError::Empty) => assert!(model.is_empty(), "{ctx}"),
                    Err(e) => panic!("{ctx}: {e}"),
                },
            }
        }
        // Drain: everything the model holds comes out, in order.
        while let Some(want) = model.pop_front() {
            rx.try_recv(&mut buf).unwrap();
            assert_eq!(buf, want, "seed {seed}: drain");
        }
        assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
    }
}
