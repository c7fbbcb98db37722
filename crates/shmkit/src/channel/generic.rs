//! One interface over every end that receives (SPSC [`Receiver`](super::Receiver),
//! broadcast [`Subscriber`](super::broadcast::Subscriber), MPSC
//! [`Receiver`](super::mpsc::Receiver)) and every end that sends (SPSC and MPSC
//! senders, the broadcast [`Publisher`](super::broadcast::Publisher)), with one error
//! type, [`Failure`]: for code generic over ends, such as the Python and C bindings.
//!
//! ```
//! use shmkit::channel::generic::{Failure, RecvEnd};
//! use shmkit::channel::spsc;
//!
//! /// Drains whatever end it is given.
//! fn drain<R: RecvEnd>(rx: &mut R) -> Result<usize, Failure> {
//!     let mut n = 0;
//!     loop {
//!         match rx.try_recv_ref() {
//!             Ok(_message) => n += 1,
//!             Err(Failure::Empty) => return Ok(n),
//!             Err(e) => return Err(e),
//!         }
//!     }
//! }
//!
//! let (mut tx, mut rx) = spsc::pair(spsc::create_memfd(&spsc::Config::default())?)?;
//! tx.send(b"one").map_err(|e| e.without_message())?;
//! tx.send(b"two").map_err(|e| e.without_message())?;
//! assert_eq!(drain(&mut rx)?, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use super::{broadcast, mpsc, spsc, NotifyEnd, WaitStrategy};

/// Why an operation on any end did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No message now (a receive that does not wait).
    Empty,
    /// No room now (a send that does not wait).
    Full,
    /// Nothing happened within the timeout.
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

macro_rules! from_recv_errors {
    ($($t:ty { $($extra:tt)* })*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Failure {
                type E = $t;
                #[allow(unreachable_patterns)]
                match e {
                    E::Disconnected => Failure::Disconnected,
                    E::PeerDead { pid } => Failure::PeerDead { pid },
                    E::Corrupt { what } => Failure::Corrupt { what },
                    $($extra)*
                }
            }
        }
    )*};
}

from_recv_errors! {
    super::RecvError {}
    super::TryRecvError { super::TryRecvError::Empty => Failure::Empty, }
    super::RecvTimeoutError { super::RecvTimeoutError::Timeout => Failure::Timeout, }
    broadcast::RecvError { broadcast::RecvError::Lagged { missed } => Failure::Lagged { missed }, }
    broadcast::TryRecvError {
        broadcast::TryRecvError::Empty => Failure::Empty,
        broadcast::TryRecvError::Lagged { missed } => Failure::Lagged { missed },
    }
    broadcast::RecvTimeoutError {
        broadcast::RecvTimeoutError::Timeout => Failure::Timeout,
        broadcast::RecvTimeoutError::Lagged { missed } => Failure::Lagged { missed },
    }
}

macro_rules! from_send_errors {
    ($($t:ident { $($extra:tt)* })*) => {$(
        impl<T> From<super::$t<T>> for Failure {
            fn from(e: super::$t<T>) -> Failure {
                #[allow(unreachable_patterns)]
                match e.without_message() {
                    super::$t::Disconnected(()) => Failure::Disconnected,
                    super::$t::PeerDead { pid, .. } => Failure::PeerDead { pid },
                    super::$t::TooLarge { max, .. } => Failure::TooLarge { max },
                    super::$t::Corrupt { what, .. } => Failure::Corrupt { what },
                    $($extra)*
                }
            }
        }
    )*};
}

from_send_errors! {
    SendError {}
    TrySendError { super::TrySendError::Full(()) => Failure::Full, }
    SendTimeoutError { super::SendTimeoutError::Timeout(()) => Failure::Timeout, }
}

/// An end that receives.
pub trait RecvEnd: NotifyEnd + Send + 'static {
    /// A message lent in place, released when dropped.
    type Grant<'a>: Deref<Target = [u8]>
    where
        Self: 'a;
    /// What the end is called in messages ("receiver", "subscriber").
    const WHAT: &'static str;
    /// The next message, without waiting.
    fn try_recv_ref(&mut self) -> Result<Self::Grant<'_>, Failure>;
    /// The next message, waiting at most `timeout`.
    fn recv_ref_timeout(&mut self, timeout: Duration) -> Result<Self::Grant<'_>, Failure>;
    /// The next message, waiting for one.
    fn recv_ref_blocking(&mut self) -> Result<Self::Grant<'_>, Failure>;
    fn max_message(&self) -> usize;
    fn set_wait_strategy(&mut self, wait: WaitStrategy);
    /// The sender record a lent message came from (MPSC), else 0.
    fn sender(_grant: &Self::Grant<'_>) -> u32 {
        0
    }
}

/// An end that sends.
pub trait SendEnd: NotifyEnd + Send + 'static {
    /// What the end is called in messages ("sender", "publisher").
    const WHAT: &'static str;
    fn try_send(&mut self, msg: &[u8]) -> Result<(), Failure>;
    fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<(), Failure>;
    fn send_blocking(&mut self, msg: &[u8]) -> Result<(), Failure>;
    fn max_message(&self) -> usize;
    fn set_wait_strategy(&mut self, wait: WaitStrategy);
}

/// A sender that lends room in its ring (zero-copy sends).
pub trait LoanEnd: SendEnd {
    /// Room lent in place: committed with [`LoanEnd::commit`], abandoned when dropped.
    type Loan<'a>: DerefMut<Target = [u8]>
    where
        Self: 'a;
    fn try_loan(&mut self, len: usize) -> Result<Self::Loan<'_>, Failure>;
    fn loan_timeout(&mut self, len: usize, timeout: Duration) -> Result<Self::Loan<'_>, Failure>;
    fn loan_blocking(&mut self, len: usize) -> Result<Self::Loan<'_>, Failure>;
    /// Publishes the first `len` bytes of the loan as one message.
    fn commit(loan: Self::Loan<'_>, len: usize);
}

macro_rules! recv_end {
    ($t:ty, $grant:ty, $what:literal, $sender:expr) => {
        impl RecvEnd for $t {
            type Grant<'a> = $grant;
            const WHAT: &'static str = $what;
            fn try_recv_ref(&mut self) -> Result<Self::Grant<'_>, Failure> {
                <$t>::try_recv_ref(self).map_err(Failure::from)
            }
            fn recv_ref_timeout(&mut self, timeout: Duration) -> Result<Self::Grant<'_>, Failure> {
                <$t>::recv_ref_timeout(self, timeout).map_err(Failure::from)
            }
            fn recv_ref_blocking(&mut self) -> Result<Self::Grant<'_>, Failure> {
                <$t>::recv_ref(self).map_err(Failure::from)
            }
            fn max_message(&self) -> usize {
                <$t>::max_message(self)
            }
            fn set_wait_strategy(&mut self, wait: WaitStrategy) {
                <$t>::set_wait_strategy(self, wait)
            }
            fn sender(grant: &Self::Grant<'_>) -> u32 {
                ($sender)(grant)
            }
        }
    };
}

recv_end!(spsc::Receiver, spsc::ReadGrant<'a>, "receiver", |_: &spsc::ReadGrant<'_>| 0);
recv_end!(
    broadcast::Subscriber,
    broadcast::ReadGrant<'a>,
    "subscriber",
    |_: &broadcast::ReadGrant<'_>| 0
);
recv_end!(mpsc::Receiver, mpsc::ReadGrant<'a>, "receiver", |g: &mpsc::ReadGrant<'_>| g.sender());

macro_rules! send_end {
    ($t:ty, $what:literal) => {
        impl SendEnd for $t {
            const WHAT: &'static str = $what;
            fn try_send(&mut self, msg: &[u8]) -> Result<(), Failure> {
                <$t>::try_send(self, msg).map_err(Failure::from)
            }
            fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<(), Failure> {
                <$t>::send_timeout(self, msg, timeout).map_err(Failure::from)
            }
            fn send_blocking(&mut self, msg: &[u8]) -> Result<(), Failure> {
                <$t>::send(self, msg).map_err(Failure::from)
            }
            fn max_message(&self) -> usize {
                <$t>::max_message(self)
            }
            fn set_wait_strategy(&mut self, wait: WaitStrategy) {
                <$t>::set_wait_strategy(self, wait)
            }
        }
    };
}

send_end!(spsc::Sender, "sender");
send_end!(mpsc::Sender, "sender");
send_end!(broadcast::Publisher, "publisher");

macro_rules! loan_end {
    ($t:ty, $loan:ty) => {
        impl LoanEnd for $t {
            type Loan<'a> = $loan;
            fn try_loan(&mut self, len: usize) -> Result<Self::Loan<'_>, Failure> {
                <$t>::try_loan(self, len).map_err(Failure::from)
            }
            fn loan_timeout(
                &mut self,
                len: usize,
                timeout: Duration,
            ) -> Result<Self::Loan<'_>, Failure> {
                <$t>::loan_timeout(self, len, timeout).map_err(Failure::from)
            }
            fn loan_blocking(&mut self, len: usize) -> Result<Self::Loan<'_>, Failure> {
                <$t>::loan(self, len).map_err(Failure::from)
            }
            fn commit(loan: Self::Loan<'_>, len: usize) {
                loan.commit(len)
            }
        }
    };
}

loan_end!(spsc::Sender, spsc::WriteGrant<'a>);
loan_end!(mpsc::Sender, mpsc::WriteGrant<'a>);
