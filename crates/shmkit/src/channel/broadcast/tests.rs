use super::*;
use crate::channel::{SendTimeoutError, TrySendError};

fn channel(slots: usize, overflow: Overflow, subscribers: usize) -> (Publisher, Vec<Subscriber>) {
    let config = Config { slots, max_message: 100, subscribers: 4, overflow, ..Config::default() };
    local(create_memfd(&config).unwrap(), subscribers).unwrap()
}

fn msg(i: u64, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..len).map(|j| (i as u8).wrapping_add(j as u8)).collect();
    if len >= 8 {
        m[..8].copy_from_slice(&i.to_le_bytes());
    }
    m
}

#[test]
fn every_subscriber_gets_every_message_of_every_length() {
    // Lengths on both sides of the slot's first line (48 message bytes), which the
    // publisher writes last.
    for overflow in [Overflow::Backpressure, Overflow::Overwrite] {
        let (mut p, mut subs) = channel(8, overflow, 3);
        let mut buf = Vec::new();
        for i in 0..200u64 {
            let m = msg(i, (i % 101) as usize);
            p.send(&m).unwrap();
            for s in &mut subs {
                assert_eq!(s.try_recv(&mut buf), Ok(m.len()));
                assert_eq!(buf, m, "{overflow:?}");
            }
        }
        for s in &mut subs {
            assert_eq!(s.try_recv(&mut buf), Err(TryRecvError::Empty));
        }
    }
}

#[test]
fn a_gathered_message_arrives_as_its_parts_joined_whatever_the_cuts() {
    // Cuts before, at and after the slot's first line (48 bytes), inside words,
    // empty parts, and a part that spans the whole first line.
    let m = msg(7, 100);
    let cuts: [&[usize]; 7] = [
        &[],
        &[0],
        &[48],
        &[3, 47, 49, 90],
        &[0, 0, 100],
        &[1, 2, 3, 5, 8, 13, 21, 34, 55, 89],
        &[100, 100],
    ];
    for overflow in [Overflow::Backpressure, Overflow::Overwrite] {
        let (mut p, mut subs) = channel(4, overflow, 2);
        let mut buf = Vec::new();
        for (round, cuts) in cuts.iter().enumerate() {
            let mut parts = Vec::new();
            let mut at = 0;
            for &c in cuts.iter() {
                parts.push(&m[at..c]);
                at = c;
            }
            parts.push(&m[at..]);
            p.send_vectored(&parts).unwrap();
            // A short message between: stale bytes of the slot must not show.
            p.send(&m[..5]).unwrap();
            for s in &mut subs {
                assert_eq!(s.try_recv(&mut buf), Ok(100), "{overflow:?} round {round}");
                assert_eq!(buf, m, "{overflow:?} cuts {cuts:?}");
                assert_eq!(s.try_recv(&mut buf), Ok(5));
            }
        }
        // No parts is the empty message; too many bytes are refused, nothing sent.
        p.send_vectored(&[]).unwrap();
        let too_large = p.send_vectored(&[&m, &m[..1]]);
        assert_eq!(too_large, Err(SendError::TooLarge { msg: (), max: 100 }));
        for s in &mut subs {
            assert_eq!(s.try_recv(&mut buf), Ok(0));
            assert_eq!(s.try_recv(&mut buf), Err(TryRecvError::Empty));
        }
    }
}

#[test]
fn an_overtaken_subscriber_is_told_how_many_it_missed_and_reads_the_oldest_left() {
    let (mut p, mut subs) = channel(8, Overflow::Overwrite, 1);
    for i in 0..30u64 {
        p.try_send(&msg(i, 16)).unwrap(); // never waits
    }
    let mut buf = Vec::new();
    assert_eq!(subs[0].try_recv(&mut buf), Err(TryRecvError::Lagged { missed: 22 }));
    for i in 22..30u64 {
        subs[0].try_recv(&mut buf).unwrap();
        assert_eq!(buf, msg(i, 16));
    }
    assert_eq!(subs[0].try_recv(&mut buf), Err(TryRecvError::Empty));
}

#[test]
fn a_loss_report_reaches_every_subscriber_as_a_lag_between_messages() {
    for overflow in [Overflow::Overwrite, Overflow::Backpressure] {
        let (mut p, mut subs) = channel(8, overflow, 2);
        p.send(&msg(0, 16)).unwrap();
        p.report_lost(5).unwrap();
        p.report_lost(0).unwrap(); // nothing to say: no slot
        p.send(&msg(6, 40)).unwrap();
        assert_eq!(p.published(), 3);
        let mut buf = Vec::new();
        for sub in &mut subs {
            sub.try_recv(&mut buf).unwrap();
            assert_eq!(buf, msg(0, 16));
            assert_eq!(sub.try_recv(&mut buf), Err(TryRecvError::Lagged { missed: 5 }));
            assert_eq!(sub.try_recv_ref().unwrap().to_vec(), msg(6, 40));
            assert_eq!(sub.try_recv(&mut buf), Err(TryRecvError::Empty));
        }
        let seg = p.segment();
        let st = status(seg, &crate::layout::validate(seg).unwrap()).unwrap();
        assert!(st.subscribers.iter().all(|s| s.missed == 5 && s.received == 2), "{st:?}");
        assert_eq!(st.bytes, 56, "a loss report is not payload");
    }
}

#[test]
fn a_loss_report_overwritten_before_it_is_read_is_part_of_the_lag() {
    let (mut p, mut subs) = channel(8, Overflow::Overwrite, 1);
    p.report_lost(1000).unwrap();
    for i in 0..10u64 {
        p.send(&msg(i, 8)).unwrap();
    }
    let mut buf = Vec::new();
    // The report and two messages were overwritten: 3 slots lost, not 1000.
    assert_eq!(subs[0].try_recv(&mut buf), Err(TryRecvError::Lagged { missed: 3 }));
    subs[0].try_recv(&mut buf).unwrap();
    assert_eq!(buf, msg(2, 8));
}

#[test]
fn user_words_outlive_the_publisher_for_the_next_one() {
    let config = Config { slots: 8, max_message: 64, ..Config::default() };
    let name = Name::Posix(format!("/shmkit.test.{}.user-words", std::process::id()));
    let created = create(&name, &config).unwrap(); // removed when dropped
    let open = || Publisher::from_segment(Segment::open(&name, &Options::default()).unwrap());
    let mut p = open().unwrap();
    assert_eq!(p.user_words(), [0, 0]);
    p.set_user_words([7, 1 << 40]);
    drop(p);
    assert_eq!(open().unwrap().user_words(), [7, 1 << 40]);
    drop(created);
}

#[test]
fn backpressure_fills_up_to_the_slowest_subscriber_then_frees_a_slot_per_read() {
    let (mut p, mut subs) = channel(4, Overflow::Backpressure, 2);
    for i in 0..4u64 {
        p.try_send(&msg(i, 8)).unwrap();
    }
    assert!(matches!(p.try_send(&[1]), Err(TrySendError::Full(_))));
    let mut buf = Vec::new();
    subs[0].try_recv(&mut buf).unwrap();
    assert!(matches!(p.try_send(&[1]), Err(TrySendError::Full(_))), "sub 1 still holds it");
    {
        let g = subs[1].recv_ref().unwrap();
        assert_eq!(&*g, &msg(0, 8)[..]);
        assert!(matches!(p.try_send(&[1]), Err(TrySendError::Full(_))), "lent in place");
    }
    p.try_send(&msg(4, 8)).unwrap();
    assert!(matches!(
        p.send_timeout(&[1], Duration::from_millis(10)),
        Err(SendTimeoutError::Timeout(_))
    ));
}

#[test]
fn hints_move_once_per_step_and_a_waiting_publisher_still_sees_every_freed_slot() {
    let (mut p, mut subs) = channel(64, Overflow::Backpressure, 2);
    assert_eq!(hint_step(64), 8);
    while p.try_send(&[1; 8]).is_ok() {}
    let mut buf = Vec::new();
    fn line(s: &Subscriber) -> &CursorLine {
        s.shared.view().cursor_line(s.index())
    }
    for _ in 0..3 {
        subs[0].try_recv(&mut buf).unwrap();
        subs[1].try_recv(&mut buf).unwrap();
    }
    // Three read: below a step, so the hints stay where the subscribers joined.
    for s in &subs {
        assert_eq!(line(s).cursor.load(Ordering::Relaxed), 3);
        assert_eq!(line(s).hint.load(Ordering::Relaxed), 0);
    }
    // A send that may wait looks at the hints first but must still find the three
    // slots (its final look is exact; with no time to wait it has nothing else).
    for _ in 0..3 {
        p.send_timeout(&[2; 8], Duration::ZERO).unwrap();
    }
    assert!(matches!(p.try_send(&[3]), Err(TrySendError::Full(_))));
    for _ in 0..5 {
        subs[0].try_recv(&mut buf).unwrap();
        subs[1].try_recv(&mut buf).unwrap();
    }
    for s in &subs {
        assert_eq!(line(s).hint.load(Ordering::Relaxed), 8, "a step read");
    }
}

#[test]
fn a_late_subscriber_starts_at_the_head_and_a_leaving_one_stops_holding_back() {
    let (mut p, mut subs) = channel(4, Overflow::Backpressure, 1);
    for i in 0..4u64 {
        p.try_send(&msg(i, 8)).unwrap();
    }
    drop(subs.pop()); // the only subscriber leaves with 4 unread
    p.try_send(&msg(4, 8)).unwrap();
    let mut late = Subscriber::attach(p.shared.clone()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(late.try_recv(&mut buf), Err(TryRecvError::Empty));
    p.try_send(&msg(5, 8)).unwrap();
    late.try_recv(&mut buf).unwrap();
    assert_eq!(buf, msg(5, 8));
}

#[test]
fn subscribers_drain_then_see_the_publisher_close() {
    let (mut p, mut subs) = channel(8, Overflow::Overwrite, 2);
    p.send(b"last words").unwrap();
    drop(p);
    let mut buf = Vec::new();
    for s in &mut subs {
        assert_eq!(s.recv(&mut buf), Ok(10));
        assert_eq!(s.recv(&mut buf), Err(RecvError::Disconnected));
    }
}

#[test]
fn oversized_messages_busy_records_and_a_second_publisher_are_refused() {
    let (mut p, _subs) = channel(8, Overflow::Overwrite, 4);
    assert!(matches!(p.send(&[0; 101]), Err(SendError::TooLarge { max: 100, .. })));
    assert!(matches!(Subscriber::attach(p.shared.clone()), Err(Error::Busy { .. })));
    assert!(matches!(Publisher::attach(p.shared.clone()), Err(Error::Busy { .. })));
}

#[test]
fn impossible_positions_and_lengths_are_corrupt_not_a_panic() {
    let (mut p, mut subs) = channel(8, Overflow::Overwrite, 1);
    p.send(&msg(0, 8)).unwrap();
    let v = p.shared.view();
    v.slot(0).0.len.store(5000, Ordering::Relaxed);
    let mut buf = Vec::new();
    assert!(matches!(subs[0].try_recv(&mut buf), Err(TryRecvError::Corrupt { .. })));
    v.slot(0).0.seq.store(7, Ordering::Relaxed);
    assert!(matches!(subs[0].try_recv(&mut buf), Err(TryRecvError::Corrupt { .. })));
    v.slot(0).0.seq.store(0, Ordering::Relaxed); // never written, yet head says published
    assert!(matches!(subs[0].try_recv(&mut buf), Err(TryRecvError::Corrupt { .. })));
    // A waiting receiver's quick looks see only `seq` (the message still to come);
    // its exact looks compare with `head` and report the corruption, not a timeout.
    let waited = subs[0].recv_timeout(&mut buf, Duration::from_secs(5));
    assert!(matches!(waited, Err(RecvTimeoutError::Corrupt { .. })), "{waited:?}");
    v.publisher_line().head.store(u64::MAX, Ordering::Relaxed);
    assert!(matches!(subs[0].try_recv(&mut buf), Err(TryRecvError::Corrupt { .. })));
}

#[test]
fn counters_for_tools_may_hold_anything() {
    // Found by fuzz/receive_broadcast: `received` at u64::MAX overflowed.
    let (mut p, mut subs) = channel(8, Overflow::Overwrite, 1);
    let line = p.shared.view().cursor_line(subs[0].index());
    line.received.store(u64::MAX, Ordering::Relaxed);
    line.missed.store(u64::MAX, Ordering::Relaxed);
    p.send(&msg(0, 8)).unwrap();
    let mut buf = Vec::new();
    assert_eq!(subs[0].try_recv(&mut buf), Ok(8));
    for i in 1..30 {
        p.send(&msg(i, 8)).unwrap();
    }
    assert!(matches!(subs[0].try_recv(&mut buf), Err(TryRecvError::Lagged { .. })));
}

#[test]
fn configs_out_of_range_are_refused() {
    for c in [
        Config { slots: 3, ..Config::default() },
        Config { slots: 1, ..Config::default() },
        Config { subscribers: 0, ..Config::default() },
        Config { subscribers: 65, ..Config::default() },
        Config { max_message: 2 << 30, ..Config::default() },
    ] {
        assert!(matches!(c.required_size(), Err(Error::InvalidArgument(_))), "{c:?}");
    }
}
