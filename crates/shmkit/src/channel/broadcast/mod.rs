//! One publisher, many subscribers: every subscriber sees every message (or is told how
//! many it missed), each at its own pace. Byte-exact layout: docs/DESIGN.md §2
//! "Broadcast".
//!
//! ```text
//! offset 0          Header            params: slots, slot size, max message, overflow, subscribers
//! offset 128        Endpoint[0]       the publisher
//! offset 192        Endpoint[1..=N]   subscribers (pid, start time, state, futex, flags)
//! PUBLISHER_LINE    PublisherLine     head (publisher writes); bell + sleepers (shared park)
//! + 128             CursorLine[N]     each subscriber's cursor (that subscriber writes)
//! + 128·N           slots             `slots` × `slot_size` bytes: SlotHeader + message
//! ```
//! Offsets follow from N and are recomputed, not stored; every line is 128 bytes.
//!
//! # Slots (a seqlock each)
//! Message number `p` goes to slot `p mod slots`. The publisher stores the slot's `seq`
//! as `2p + 1` (being written; under backpressure, where no reader can be in the slot,
//! this step is left out), fences, writes length and bytes with relaxed atomic stores
//! (those past the slot's first line first), stores `seq = 2p + 2` (Release), then
//! `head = p + 1` (Release). A subscriber at cursor `c` loads `seq` (Acquire): `2c + 2`
//! means its message is there; a larger value means a later lap has overwritten (or is
//! overwriting) it; a smaller one, and `head <= c`, that it is still to come. After
//! copying the bytes out (relaxed atomic loads) it fences and loads `seq` again:
//! unchanged means the copy is whole. A torn copy is never returned.
//!
//! # Overflow
//! - [`Overflow::Overwrite`]: the publisher never waits and never looks at subscribers,
//!   so its cost does not depend on how many there are. A subscriber more than a ring
//!   behind gets [`RecvError::Lagged`] with the number of messages it lost and continues
//!   from the oldest one still in the ring. Messages are copied out and checked
//!   ([`Subscriber::recv_ref`] lends a validated copy).
//! - [`Overflow::Backpressure`]: the publisher does not reuse a slot until every live
//!   subscriber has passed it; it waits (or `try_send` says `Full`). It caches the
//!   slowest cursor and rescans the N cursors only when the ring looks full. A
//!   subscriber whose process died is skipped once its death is seen (pid + start time,
//!   within the liveness period). Here [`Subscriber::recv_ref`] lends the slot in place.
//!
//! # Joining
//! A subscriber claims a free (or dead) subscriber record, fences, reads `head` and sets
//! its cursor there: it receives what is published after it joined. The fence pairs with
//! the one before the publisher's rescan: a rescan that misses the new subscriber ran
//! before it read `head`, so the cached minimum is at most that `head`, and the
//! publisher cannot overwrite anything from the joining position on before its next
//! rescan, which sees the subscriber.
//!
//! # Trust
//! Positions, sequence numbers and lengths read from the segment are validated; a
//! corrupt segment gives `Corrupt`, never an access outside the slot.

use std::mem::size_of;
use std::ops::Deref;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel::end::{recv_forms, send_forms};
use crate::channel::ring::{prefetch, Refresh};
use crate::channel::{
    recv_error, Deadline, End, Failure, FromFailure, RecvEnd, SendEnd, SendError,
};
use crate::error::{Error, Result};
use crate::layout::{endpoint_flags, endpoint_state, Endpoint, HeaderInfo, ObjectKind};
use crate::segment::{Name, Options, Segment};
use crate::sync::notify::{Doorbell, Notifier};
use crate::sync::peer::Liveness;
use crate::sync::wait::{self, sleepers, Look, Park, Stop, WaitStrategy};
use crate::typed::{TypeCheck, TypeTag, TypedError};

mod layout;
mod publisher;
mod slot;
mod status;
mod subscriber;
#[cfg(test)]
mod tests;

pub use layout::*;
pub use publisher::*;
use slot::*;
pub use status::*;
pub use subscriber::*;

/// Endpoint index of the publisher; subscribers are 1..=N.
pub const PUBLISHER: u32 = 0;
/// Most subscribers a channel can have.
pub const MAX_SUBSCRIBERS: u32 = 64;
/// Bytes before a slot's message.
pub const SLOT_HEADER: usize = 16;

/// Indices into [`layout::Header::params`].
pub mod param {
    pub const SLOTS: usize = 0;
    pub const SLOT_SIZE: usize = 1;
    pub const MAX_MESSAGE: usize = 2;
    pub const OVERFLOW: usize = 3;
    pub const SUBSCRIBERS: usize = 4;
}

/// What the publisher does when the slowest subscriber is a whole ring behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Overflow {
    /// Overwrite the oldest message; the subscriber learns it `Lagged`.
    Overwrite = 1,
    /// Wait until every live subscriber has read it.
    Backpressure = 2,
}

impl Overflow {
    fn from_tag(tag: u64) -> Option<Overflow> {
        match tag {
            1 => Some(Overflow::Overwrite),
            2 => Some(Overflow::Backpressure),
            _ => None,
        }
    }
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overflow::Overwrite => "overwrite",
            Overflow::Backpressure => "backpressure",
        })
    }
}

impl std::str::FromStr for Overflow {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Overflow, String> {
        match s {
            "overwrite" => Ok(Overflow::Overwrite),
            "backpressure" => Ok(Overflow::Backpressure),
            _ => Err(format!("{s:?}: expected overwrite or backpressure")),
        }
    }
}

/// Parameters of a new broadcast channel.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Messages the ring holds: a power of two, 2 to 2^24 (default 1024).
    pub slots: usize,
    /// Largest message in bytes (default 1008: 1 KiB slots).
    pub max_message: usize,
    /// Subscriber records, 1 to [`MAX_SUBSCRIBERS`] (default 16).
    pub subscribers: u32,
    /// Default [`Overflow::Overwrite`].
    pub overflow: Overflow,
    /// Permission bits of a named segment (default 0600).
    pub mode: u32,
    /// Group of the new segment (see [`Options::group`](crate::segment::Options::group)); `None`: the creator's.
    pub group: Option<u32>,
    /// The one type of value the channel carries, if it is typed (see [`crate::typed`]).
    pub message_type: Option<TypeTag>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            slots: 1024,
            max_message: 1008,
            subscribers: 16,
            overflow: Overflow::Overwrite,
            mode: 0o600,
            group: None,
            message_type: None,
        }
    }
}

/// A publisher and `subscribers` subscribers sharing one mapping (threads, tests).
pub fn local(seg: Segment, subscribers: usize) -> Result<(Publisher, Vec<Subscriber>)> {
    let shared = Arc::new(Shared::open(seg)?);
    let publisher = Publisher::attach(shared.clone())?;
    let subs =
        (0..subscribers).map(|_| Subscriber::attach(shared.clone())).collect::<Result<_>>()?;
    Ok((publisher, subs))
}
