//! The vocabulary every end shares: one [`Deadline`] type for "how long to wait", one
//! outcome type [`Failure`], and the traits [`End`], [`RecvEnd`], [`SendEnd`] and
//! [`LoanEnd`].
//!
//! Each end type (SPSC, broadcast, MPSC, and the kinds to come) implements **one core
//! operation per direction** that takes a [`Deadline`] — `recv_ref_until`,
//! `send_until`, `loan_until` — and everything else is written once over it: the
//! inherent `recv`/`try_recv`/`recv_timeout`/`recv_deadline` forms of every end (with
//! the end's own error types, crossbeam's vocabulary), the generic forms of these
//! traits, the async adapter ([`crate::tokio::Async`]) and both bindings.
//!
//! ```
//! use shmkit::channel::end::{Failure, RecvEnd};
//! use shmkit::channel::{spsc, Deadline};
//! use std::time::Duration;
//!
//! /// Drains whatever end it is given, waiting up to 10 ms for each message.
//! fn drain<R: RecvEnd>(rx: &mut R) -> Result<usize, Failure> {
//!     let mut n = 0;
//!     loop {
//!         match rx.recv_ref_until(Deadline::after(Duration::from_millis(10))) {
//!             Ok(_message) => n += 1,
//!             Err(Failure::Timeout | Failure::Disconnected) => return Ok(n),
//!             Err(e) => return Err(e),
//!         }
//!     }
//! }
//!
//! let (mut tx, mut rx) = spsc::pair(spsc::create_memfd(&spsc::Config::default())?)?;
//! tx.send(b"one").map_err(|e| e.without_message())?;
//! tx.send(b"two").map_err(|e| e.without_message())?;
//! drop(tx);
//! assert_eq!(drain(&mut rx)?, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use super::{NotifyEnd, WaitStrategy};
use crate::sync::wait::Stop;

/// When a waiting operation gives up: taken by the one core operation of every end.
///
/// `After` reads the clock only once the operation finds it must wait, so a timed
/// operation that completes at once costs what an untimed one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Do not wait (the `try_*` forms).
    Now,
    /// Wait as long as it takes (the plain forms).
    Never,
    /// Wait at most this long from the call (the `*_timeout` forms).
    After(Duration),
    /// Wait until this instant (the `*_deadline` forms).
    At(Instant),
}

impl Deadline {
    /// At most `timeout` from now.
    pub const fn after(timeout: Duration) -> Deadline {
        Deadline::After(timeout)
    }

    /// Until `instant`.
    pub const fn at(instant: Instant) -> Deadline {
        Deadline::At(instant)
    }

    /// `None` for [`Deadline::Now`] (do not wait), else how long to wait at most
    /// (`Some(None)`: for good). The clock is read only for [`Deadline::At`].
    pub fn timeout(self) -> Option<Option<Duration>> {
        match self {
            Deadline::Now => None,
            Deadline::Never => Some(None),
            Deadline::After(t) => Some(Some(t)),
            Deadline::At(i) => Some(Some(i.saturating_duration_since(Instant::now()))),
        }
    }

    /// The instant it ends, `None` for never; [`Deadline::Now`] is now.
    pub fn instant(self) -> Option<Instant> {
        match self {
            Deadline::Now => Some(Instant::now()),
            Deadline::Never => None,
            Deadline::After(t) => Instant::now().checked_add(t),
            Deadline::At(i) => Some(i),
        }
    }
}

impl From<Option<Instant>> for Deadline {
    /// crossbeam's form: `None` waits for good.
    fn from(deadline: Option<Instant>) -> Deadline {
        deadline.map_or(Deadline::Never, Deadline::At)
    }
}

impl From<Option<Duration>> for Deadline {
    /// A timeout, `None` for none.
    fn from(timeout: Option<Duration>) -> Deadline {
        timeout.map_or(Deadline::Never, Deadline::After)
    }
}

/// Why an operation on any end did not complete: the one outcome type of the core
/// operations. Each end's typed errors (`RecvError`, `TrySendError`, ...) are this
/// set narrowed to what the form can return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No message now (a receive that does not wait).
    Empty,
    /// No room now (a send that does not wait).
    Full,
    /// Nothing happened before the deadline.
    Timeout,
    /// The other side closed, and (for a receiver) everything it sent was received.
    Disconnected,
    /// The other side's process died.
    PeerDead { pid: u32 },
    /// The message is longer than the channel's maximum.
    TooLarge { max: usize },
    /// The segment holds values no correct peer writes.
    Corrupt { what: String },
    /// A broadcast subscriber fell a ring behind; `missed` messages were overwritten.
    Lagged { missed: u64 },
}

impl Failure {
    /// The outcome of a wait that stopped (`sync::wait`).
    pub(crate) fn from_stop(stop: Stop) -> Failure {
        match stop {
            Stop::Timeout => Failure::Timeout,
            Stop::Closed => Failure::Disconnected,
            Stop::Dead(pid) => Failure::PeerDead { pid },
        }
    }

    /// A corrupt-channel outcome.
    pub(crate) fn corrupt(what: impl Into<String>) -> Failure {
        Failure::Corrupt { what: what.into() }
    }

    /// True when the other side is gone (closed or dead).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Failure::Disconnected | Failure::PeerDead { .. })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Empty => f.write_str("no message now"),
            Failure::Full => f.write_str("no room now"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Disconnected => f.write_str("the other side closed the channel"),
            Failure::PeerDead { pid } => write!(f, "the other side (pid {pid}) died"),
            Failure::TooLarge { max } => {
                write!(f, "message larger than the channel's maximum of {max} bytes")
            }
            Failure::Corrupt { what } => write!(f, "corrupt channel: {what}"),
            Failure::Lagged { missed } => {
                write!(f, "lagged: {missed} messages were overwritten before they were read")
            }
        }
    }
}

impl std::error::Error for Failure {}

/// What every end has: a name, a message limit, a wait strategy, and notifying mode
/// (for event loops and the async adapter).
pub trait End: NotifyEnd + Send + 'static {
    /// What the end is called in messages ("receiver", "subscriber", "client").
    const WHAT: &'static str;
    /// Largest message in bytes.
    fn max_message(&self) -> usize;
    /// How a waiting operation waits.
    fn set_wait_strategy(&mut self, wait: WaitStrategy);
}

/// An end that receives: SPSC and MPSC receivers, broadcast subscribers.
pub trait RecvEnd: End {
    /// A message lent in place, released when dropped.
    type Grant<'a>: Deref<Target = [u8]>
    where
        Self: 'a;
    /// The error of this end's receive that waits for good (`RecvError`, or
    /// broadcast's, which adds `Lagged`): what the async adapter returns.
    type RecvError: From<Failure> + std::error::Error;
    /// What the sending side is called in messages ("sender", "publisher").
    const PEER: &'static str;

    /// **The** receive: the next message lent in place, giving up at `deadline`.
    fn recv_ref_until(&mut self, deadline: Deadline) -> Result<Self::Grant<'_>, Failure>;

    /// The next message copied into `buf` (replacing its contents); its length. An end
    /// may do this without a grant in between.
    fn recv_until(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<usize, Failure> {
        let grant = self.recv_ref_until(deadline)?;
        buf.clear();
        buf.extend_from_slice(&grant);
        Ok(grant.len())
    }

    /// Whether a message (or something a receive would report) is there, by a look
    /// that never arms a notifying end and takes nothing: what an async receive spins
    /// on.
    fn has_message(&mut self) -> bool;

    /// Whether a message is there (`Ok(true)`), without taking it; `Ok(false)` when
    /// none is, which in notifying mode has armed the end as an empty `try_*` receive
    /// does: what an async zero-copy receive waits with.
    fn ready_or_arm(&mut self) -> Result<bool, Failure>;

    /// The looks a blocking receive makes before it waits (an end may follow a
    /// streaming sender from a distance meanwhile); true if a message is there.
    fn look_before_waiting(&mut self) -> bool {
        self.has_message()
    }

    /// The number of the next message, where the channel numbers them (a broadcast
    /// subscriber's position: how many were published before it), else `None`.
    fn position(&self) -> Option<u64> {
        None
    }

    /// The sender record a lent message came from (MPSC), else 0.
    fn sender(_grant: &Self::Grant<'_>) -> u32 {
        0
    }

    /// The next message, without waiting.
    fn try_recv_ref(&mut self) -> Result<Self::Grant<'_>, Failure> {
        self.recv_ref_until(Deadline::Now)
    }
    /// The next message, waiting at most `timeout`.
    fn recv_ref_timeout(&mut self, timeout: Duration) -> Result<Self::Grant<'_>, Failure> {
        self.recv_ref_until(Deadline::After(timeout))
    }
    /// The next message, waiting for one.
    fn recv_ref_blocking(&mut self) -> Result<Self::Grant<'_>, Failure> {
        self.recv_ref_until(Deadline::Never)
    }
}

/// An end that sends: SPSC and MPSC senders, the broadcast publisher.
pub trait SendEnd: End {
    /// **The** send: `msg` as one message, giving up at `deadline`.
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), Failure>;

    /// Whether a send of `len` bytes would not wait now (or would fail at once), by a
    /// look that never arms a notifying end: what an async send spins on.
    fn has_room(&mut self, len: usize) -> bool;

    /// Sends `msg` if there is room now.
    fn try_send(&mut self, msg: &[u8]) -> Result<(), Failure> {
        self.send_until(msg, Deadline::Now)
    }
    /// Sends `msg`, waiting at most `timeout` for room.
    fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<(), Failure> {
        self.send_until(msg, Deadline::After(timeout))
    }
    /// Sends `msg`, waiting for room as long as it takes.
    fn send_blocking(&mut self, msg: &[u8]) -> Result<(), Failure> {
        self.send_until(msg, Deadline::Never)
    }
}

/// A sender that lends room in its ring (zero-copy sends).
pub trait LoanEnd: SendEnd {
    /// Room lent in place: committed with [`LoanEnd::commit`], abandoned when dropped.
    type Loan<'a>: DerefMut<Target = [u8]>
    where
        Self: 'a;

    /// **The** loan: `len` writable bytes in the ring, giving up at `deadline`.
    fn loan_until(&mut self, len: usize, deadline: Deadline) -> Result<Self::Loan<'_>, Failure>;
    /// Publishes the first `len` bytes of the loan as one message.
    fn commit(loan: Self::Loan<'_>, len: usize);

    /// [`LoanEnd::loan_until`] without waiting.
    fn try_loan(&mut self, len: usize) -> Result<Self::Loan<'_>, Failure> {
        self.loan_until(len, Deadline::Now)
    }
    /// [`LoanEnd::loan_until`] waiting at most `timeout`.
    fn loan_timeout(&mut self, len: usize, timeout: Duration) -> Result<Self::Loan<'_>, Failure> {
        self.loan_until(len, Deadline::After(timeout))
    }
    /// [`LoanEnd::loan_until`] waiting as long as it takes.
    fn loan_blocking(&mut self, len: usize) -> Result<Self::Loan<'_>, Failure> {
        self.loan_until(len, Deadline::Never)
    }
}

/// The inherent receive forms of an end, each a one-line call of its core operations
/// `recv_until_as`/`recv_ref_until_as` (generic over the error type): `recv`,
/// `try_recv`, `recv_timeout`, `recv_deadline` and their `_ref` (zero-copy) forms.
macro_rules! recv_forms {
    ($grant:ident, $recv:ty, $try:ty, $timed:ty) => {
        /// Receives the next message into `buf` (replacing its contents), waiting as
        /// long as it takes; returns its length.
        #[inline]
        pub fn recv(&mut self, buf: &mut Vec<u8>) -> std::result::Result<usize, $recv> {
            self.recv_until_as(buf, $crate::channel::Deadline::Never)
        }

        /// Receives a message if one is there now.
        #[inline]
        pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> std::result::Result<usize, $try> {
            self.recv_until_as(buf, $crate::channel::Deadline::Now)
        }

        /// Receives a message, waiting at most `timeout`.
        #[inline]
        pub fn recv_timeout(
            &mut self,
            buf: &mut Vec<u8>,
            timeout: std::time::Duration,
        ) -> std::result::Result<usize, $timed> {
            self.recv_until_as(buf, $crate::channel::Deadline::After(timeout))
        }

        /// Receives a message, waiting until `deadline` at most.
        #[inline]
        pub fn recv_deadline(
            &mut self,
            buf: &mut Vec<u8>,
            deadline: std::time::Instant,
        ) -> std::result::Result<usize, $timed> {
            self.recv_until_as(buf, $crate::channel::Deadline::At(deadline))
        }

        /// Lends the next message in place, waiting as long as it takes; the space is
        /// released when the grant is dropped.
        // Always inlined, with the grant's drop: a grant returned through a call goes
        // through the stack in pieces that the caller loads back whole, a
        // store-forwarding stall that made a streaming `recv_ref` receiver slower than
        // a copying `recv_into` one.
        #[inline(always)]
        pub fn recv_ref(&mut self) -> std::result::Result<$grant<'_>, $recv> {
            self.recv_ref_until_as($crate::channel::Deadline::Never)
        }

        /// [`recv_ref`](Self::recv_ref) without waiting.
        #[inline(always)]
        pub fn try_recv_ref(&mut self) -> std::result::Result<$grant<'_>, $try> {
            self.recv_ref_until_as($crate::channel::Deadline::Now)
        }

        /// [`recv_ref`](Self::recv_ref) waiting at most `timeout`.
        #[inline(always)]
        pub fn recv_ref_timeout(
            &mut self,
            timeout: std::time::Duration,
        ) -> std::result::Result<$grant<'_>, $timed> {
            self.recv_ref_until_as($crate::channel::Deadline::After(timeout))
        }

        /// [`recv_ref`](Self::recv_ref) waiting until `deadline` at most.
        #[inline(always)]
        pub fn recv_ref_deadline(
            &mut self,
            deadline: std::time::Instant,
        ) -> std::result::Result<$grant<'_>, $timed> {
            self.recv_ref_until_as($crate::channel::Deadline::At(deadline))
        }
    };
}
pub(crate) use recv_forms;

/// The inherent send forms of an end over its core `send_until_as`: `send`,
/// `try_send`, `send_timeout`, `send_deadline`.
macro_rules! send_forms {
    () => {
        /// Sends `msg`, waiting for room as long as it takes.
        #[inline]
        pub fn send<'a>(
            &mut self,
            msg: &'a [u8],
        ) -> std::result::Result<(), $crate::channel::SendError<&'a [u8]>> {
            self.send_until_as(msg, $crate::channel::Deadline::Never)
        }

        /// Sends `msg` if that needs no waiting now.
        #[inline]
        pub fn try_send<'a>(
            &mut self,
            msg: &'a [u8],
        ) -> std::result::Result<(), $crate::channel::TrySendError<&'a [u8]>> {
            self.send_until_as(msg, $crate::channel::Deadline::Now)
        }

        /// Sends `msg`, waiting at most `timeout` for room.
        #[inline]
        pub fn send_timeout<'a>(
            &mut self,
            msg: &'a [u8],
            timeout: std::time::Duration,
        ) -> std::result::Result<(), $crate::channel::SendTimeoutError<&'a [u8]>> {
            self.send_until_as(msg, $crate::channel::Deadline::After(timeout))
        }

        /// Sends `msg`, waiting until `deadline` at most for room.
        #[inline]
        pub fn send_deadline<'a>(
            &mut self,
            msg: &'a [u8],
            deadline: std::time::Instant,
        ) -> std::result::Result<(), $crate::channel::SendTimeoutError<&'a [u8]>> {
            self.send_until_as(msg, $crate::channel::Deadline::At(deadline))
        }
    };
}
pub(crate) use send_forms;

/// The inherent loan forms of an end over its core `loan_until_as`: `loan`,
/// `try_loan`, `loan_timeout`, `loan_deadline`.
macro_rules! loan_forms {
    ($grant:ident) => {
        /// Lends a writable slice of `len` bytes inside the ring, waiting for room;
        /// the grant's `commit` publishes it, dropping the grant abandons it.
        #[inline]
        pub fn loan(
            &mut self,
            len: usize,
        ) -> std::result::Result<$grant<'_>, $crate::channel::SendError<usize>> {
            self.loan_until_as(len, $crate::channel::Deadline::Never)
        }

        /// [`loan`](Self::loan) without waiting.
        #[inline]
        pub fn try_loan(
            &mut self,
            len: usize,
        ) -> std::result::Result<$grant<'_>, $crate::channel::TrySendError<usize>> {
            self.loan_until_as(len, $crate::channel::Deadline::Now)
        }

        /// [`loan`](Self::loan) waiting at most `timeout`.
        #[inline]
        pub fn loan_timeout(
            &mut self,
            len: usize,
            timeout: std::time::Duration,
        ) -> std::result::Result<$grant<'_>, $crate::channel::SendTimeoutError<usize>> {
            self.loan_until_as(len, $crate::channel::Deadline::After(timeout))
        }

        /// [`loan`](Self::loan) waiting until `deadline` at most.
        #[inline]
        pub fn loan_deadline(
            &mut self,
            len: usize,
            deadline: std::time::Instant,
        ) -> std::result::Result<$grant<'_>, $crate::channel::SendTimeoutError<usize>> {
            self.loan_until_as(len, $crate::channel::Deadline::At(deadline))
        }
    };
}
pub(crate) use loan_forms;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{broadcast, mpsc, spsc, RecvTimeoutError, SendTimeoutError};

    /// Sends two messages through any sender and takes them from any receiver with
    /// each form of the one core operation; then a deadline already passed times out.
    fn round_trip<S: SendEnd, R: RecvEnd>(tx: &mut S, rx: &mut R) {
        tx.send_until(b"one", Deadline::Never).unwrap();
        tx.send_until(b"two", Deadline::at(Instant::now() + Duration::from_secs(5))).unwrap();
        assert_eq!(&*rx.recv_ref_until(Deadline::Now).unwrap(), b"one");
        let mut buf = Vec::new();
        assert_eq!(rx.recv_until(&mut buf, Deadline::after(Duration::from_secs(5))), Ok(3));
        assert_eq!(buf, b"two");
        assert_eq!(rx.recv_ref_until(Deadline::Now).err(), Some(Failure::Empty));
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(rx.recv_ref_until(Deadline::At(past)).err(), Some(Failure::Timeout));
        assert!(!rx.has_message());
    }

    #[test]
    fn every_end_takes_one_deadline_type() {
        let (mut tx, mut rx) =
            spsc::pair(spsc::create_memfd(&spsc::Config::default()).unwrap()).unwrap();
        round_trip(&mut tx, &mut rx);
        let seg = broadcast::create_memfd(&broadcast::Config::default()).unwrap();
        let (mut p, mut subs) = broadcast::local(seg, 1).unwrap();
        round_trip(&mut p, &mut subs[0]);
        let (mut rx, mut txs) = mpsc::local(&mpsc::Config::default(), 1).unwrap();
        round_trip(&mut txs[0], &mut rx);
    }

    #[test]
    fn the_inherent_deadline_forms_give_the_typed_errors() {
        let config = spsc::Config { capacity: 4096, ..spsc::Config::default() };
        let (mut tx, mut rx) = spsc::pair(spsc::create_memfd(&config).unwrap()).unwrap();
        let past = Instant::now() - Duration::from_millis(1);
        let mut buf = Vec::new();
        assert_eq!(rx.recv_deadline(&mut buf, past), Err(RecvTimeoutError::Timeout));
        while tx.try_send(&[7; 100]).is_ok() {}
        assert!(matches!(tx.send_deadline(&[7; 100], past), Err(SendTimeoutError::Timeout(_))));
        assert!(matches!(tx.loan_deadline(100, past), Err(SendTimeoutError::Timeout(100))));
        assert_eq!(rx.recv_deadline(&mut buf, past), Ok(100));
    }

    #[test]
    fn an_outcome_a_form_cannot_have_is_corrupt_not_a_panic() {
        use crate::channel::{FromFailure, RecvError, SendError};
        assert!(matches!(RecvError::from(Failure::Empty), RecvError::Corrupt { .. }));
        assert!(matches!(SendError::from_failure(Failure::Full, 1), SendError::Corrupt { .. }));
        assert_eq!(Deadline::from(None::<Instant>), Deadline::Never);
        assert_eq!(Deadline::Now.timeout(), None);
    }
}
