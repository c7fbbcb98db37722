//! A broadcast channel's state, for tools (`shmkit info`, `top`).

#[allow(unused_imports)]
use super::*;

/// One subscriber record, for tools.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SubscriberStatus {
    pub index: u32,
    pub pid: u32,
    /// `pid` is a pid of another PID namespace than the reader's.
    pub foreign: bool,
    pub state: &'static str,
    pub alive: Liveness,
    pub cursor: u64,
    /// Messages published and not yet read.
    pub lag: u64,
    pub missed: u64,
    pub received: u64,
}

/// A snapshot of a broadcast channel for `shmkit info` (does not attach).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Status {
    pub slots: u64,
    pub slot_size: u64,
    pub max_message: u64,
    pub overflow: Overflow,
    pub subscriber_records: u32,
    /// Messages published.
    pub head: u64,
    /// Payload bytes published (zero from a publisher that predates the counter).
    pub bytes: u64,
    /// Records that are not free.
    pub subscribers: Vec<SubscriberStatus>,
}

/// Reads a broadcast channel's state.
pub fn status(seg: &Segment, info: &HeaderInfo) -> Result<Status> {
    let geo = geometry_of(seg, info)?;
    let v = View { seg, geo };
    let head = v.publisher_line().head.load(Ordering::Acquire);
    let bytes = v.publisher_line().bytes.load(Ordering::Relaxed);
    let subscribers = (1..=geo.subscribers)
        .filter_map(|i| {
            let e = v.endpoint(i);
            let state = e.state.load(Ordering::Acquire);
            if state == endpoint_state::FREE {
                return None;
            }
            let line = v.cursor_line(i);
            let cursor = line.cursor.load(Ordering::Acquire);
            Some(SubscriberStatus {
                index: i,
                pid: e.pid.load(Ordering::Relaxed),
                foreign: e.is_foreign(),
                state: endpoint_state::name(state),
                alive: e.liveness(),
                cursor,
                lag: head.saturating_sub(cursor),
                missed: line.missed.load(Ordering::Relaxed),
                received: line.received.load(Ordering::Relaxed),
            })
        })
        .collect();
    Ok(Status {
        slots: geo.slots,
        slot_size: geo.slot_size,
        max_message: geo.max_message,
        overflow: geo.overflow,
        subscriber_records: geo.subscribers,
        head,
        bytes,
        subscribers,
    })
}
