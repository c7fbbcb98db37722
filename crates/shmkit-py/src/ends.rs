//! One interface over the ends that receive (SPSC receiver, broadcast subscriber, MPSC
//! receiver) and those that send (SPSC and MPSC senders, broadcast publisher), so that
//! each Python class is the same few lines around its Rust end.

use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use shmkit::channel::{broadcast, mpsc, spsc, NotifyEnd, WaitStrategy};

use crate::errors::{Failure, Fallible};

/// An end that receives.
pub trait RecvEnd: NotifyEnd + Send + 'static {
    type Grant<'a>: Deref<Target = [u8]>
    where
        Self: 'a;
    const WHAT: &'static str;
    fn try_recv_ref(&mut self) -> Fallible<Self::Grant<'_>>;
    fn recv_ref_timeout(&mut self, timeout: Duration) -> Fallible<Self::Grant<'_>>;
    fn set_wait(&mut self, wait: WaitStrategy);
    /// The sender record a message came from (MPSC), else 0.
    fn sender(_grant: &Self::Grant<'_>) -> u32 {
        0
    }
}

/// An end that sends.
pub trait SendEnd: NotifyEnd + Send + 'static {
    const WHAT: &'static str;
    fn try_send(&mut self, msg: &[u8]) -> Fallible<()>;
    fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Fallible<()>;
    fn max_message(&self) -> usize;
    fn set_wait(&mut self, wait: WaitStrategy);
}

/// A sender that lends room in the ring (zero-copy sends).
pub trait LoanEnd: SendEnd {
    type Loan<'a>: DerefMut<Target = [u8]>
    where
        Self: 'a;
    fn try_loan(&mut self, len: usize) -> Fallible<Self::Loan<'_>>;
    fn loan_timeout(&mut self, len: usize, timeout: Duration) -> Fallible<Self::Loan<'_>>;
    fn commit(loan: Self::Loan<'_>, len: usize);
}

/// The readiness fd of an end, switching it into notifying mode the first time.
pub fn fileno<E: NotifyEnd>(end: &mut E) -> Fallible<RawFd> {
    end.enable_notify()?;
    Ok(end.bell().expect("an end in notifying mode has a doorbell").as_raw_fd())
}

macro_rules! recv_end {
    ($t:ty, $grant:ty, $what:literal, $sender:expr) => {
        impl RecvEnd for $t {
            type Grant<'a> = $grant;
            const WHAT: &'static str = $what;
            fn try_recv_ref(&mut self) -> Fallible<Self::Grant<'_>> {
                <$t>::try_recv_ref(self).map_err(Failure::from)
            }
            fn recv_ref_timeout(&mut self, timeout: Duration) -> Fallible<Self::Grant<'_>> {
                <$t>::recv_ref_timeout(self, timeout).map_err(Failure::from)
            }
            fn set_wait(&mut self, wait: WaitStrategy) {
                self.set_wait_strategy(wait)
            }
            fn sender(grant: &Self::Grant<'_>) -> u32 {
                ($sender)(grant)
            }
        }
    };
}

recv_end!(spsc::Receiver, spsc::ReadGrant<'a>, "receiver", |_g| 0);
recv_end!(broadcast::Subscriber, broadcast::ReadGrant<'a>, "subscriber", |_g| 0);
recv_end!(mpsc::Receiver, mpsc::ReadGrant<'a>, "receiver", |g: &mpsc::ReadGrant<'_>| g.sender());

macro_rules! send_end {
    ($t:ty, $what:literal) => {
        impl SendEnd for $t {
            const WHAT: &'static str = $what;
            fn try_send(&mut self, msg: &[u8]) -> Fallible<()> {
                <$t>::try_send(self, msg).map_err(Failure::from)
            }
            fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Fallible<()> {
                <$t>::send_timeout(self, msg, timeout).map_err(Failure::from)
            }
            fn max_message(&self) -> usize {
                <$t>::max_message(self)
            }
            fn set_wait(&mut self, wait: WaitStrategy) {
                self.set_wait_strategy(wait)
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
            fn try_loan(&mut self, len: usize) -> Fallible<Self::Loan<'_>> {
                <$t>::try_loan(self, len).map_err(Failure::from)
            }
            fn loan_timeout(&mut self, len: usize, timeout: Duration) -> Fallible<Self::Loan<'_>> {
                <$t>::loan_timeout(self, len, timeout).map_err(Failure::from)
            }
            fn commit(loan: Self::Loan<'_>, len: usize) {
                loan.commit(len)
            }
        }
    };
}

loan_end!(spsc::Sender, spsc::WriteGrant<'a>);
loan_end!(mpsc::Sender, mpsc::WriteGrant<'a>);

/// `wait=` of the Python constructors: "spin", "adaptive" (default), "block".
pub fn strategy(name: &str) -> Fallible<WaitStrategy> {
    match name {
        "spin" => Ok(WaitStrategy::BusySpin),
        "adaptive" => Ok(WaitStrategy::default()),
        "block" => Ok(WaitStrategy::Block),
        other => Err(crate::errors::invalid(format!(
            "wait must be \"spin\", \"adaptive\" or \"block\", not {other:?}"
        ))),
    }
}
