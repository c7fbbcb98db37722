//! Async ends on tokio (cargo feature `tokio`): [`AsyncReceiver`] and [`AsyncSender`]
//! over SPSC channels, and [`futures_core::Stream`] for receivers.
//!
//! Each wraps an end in notifying mode ([`Notifying`]) in a
//! [`tokio::io::unix::AsyncFd`] on its doorbell. An operation first tries without
//! waiting; only when the channel is empty (or full) does it spin briefly, as the
//! end's wait strategy says, and then arm the end and await the doorbell. With traffic
//! flowing, no epoll round trip and no system call is made per message.
//!
//! Works on any tokio runtime with IO enabled (`current_thread` or multi-thread).
//!
//! ```
//! use shmkit::channel::spsc;
//! use shmkit::tokio::{AsyncReceiver, AsyncSender};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
//! rt.block_on(async {
//!     let (tx, rx) = spsc::pair(spsc::create_memfd(&spsc::Config::default())?)?;
//!     let (mut tx, mut rx) = (AsyncSender::new(tx)?, AsyncReceiver::new(rx)?);
//!     let mut buf = Vec::new();
//!     tx.send(b"hello").await?;
//!     rx.recv(&mut buf).await?;
//!     assert_eq!(buf, b"hello");
//!     Ok(())
//! })
//! # }
//! ```

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::channel::{
    Notifying, Receiver, RecvError, SendError, Sender, TryRecvError, TrySendError, WaitStrategy,
};
use crate::error::Result;

/// The longest an async wait spins before it arms and yields to the runtime, whatever
/// the strategy says: spinning blocks every other task of the thread meanwhile.
pub const MAX_SPIN: Duration = Duration::from_micros(50);

/// How long an async operation of `strategy` spins before awaiting the fd.
fn spin_budget(strategy: WaitStrategy) -> Duration {
    strategy.budget().0.min(MAX_SPIN)
}

/// Spins up to `budget` until `ready` says so; the clock is read every 64 looks.
fn spin_until(budget: Duration, mut ready: impl FnMut() -> bool) -> bool {
    if budget.is_zero() {
        return false;
    }
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= budget {
            return false;
        }
    }
}

/// Awaits the doorbell of an end whose `try_*` has just armed it (reported Empty/Full),
/// then clears the readiness tokio saw. tokio clears only the event that woke us, not a
/// newer one, so a ring that came in between is not lost. An error comes only from a
/// runtime that is shutting down.
fn poll_rung<E: crate::channel::NotifyEnd>(
    fd: &mut AsyncFd<Notifying<E>>,
    cx: &mut Context<'_>,
) -> Poll<std::result::Result<(), String>> {
    match ready!(fd.poll_read_ready_mut(cx)) {
        Ok(mut guard) => {
            guard.clear_ready();
            Poll::Ready(Ok(()))
        }
        Err(e) => Poll::Ready(Err(format!("tokio: {e}"))),
    }
}

fn async_fd<E: crate::channel::NotifyEnd>(end: E) -> Result<AsyncFd<Notifying<E>>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(crate::Error::InvalidArgument(
            "an async shmkit end must be made inside a tokio runtime".into(),
        ));
    }
    let end = Notifying::new(end)?;
    // SAFETY: the doorbell socket is owned by `end` for its whole life (it is dropped
    // only with the end), and `as_raw_fd` returns that same fd on every call.
    unsafe { AsyncFd::register_with_interest(end, Interest::READABLE) }
        .map_err(|e| crate::Error::io("epoll_ctl", "tokio AsyncFd", e.into_parts().1))
}

/// The receiving end of an SPSC channel, awaited on a tokio runtime.
#[derive(Debug)]
pub struct AsyncReceiver {
    inner: AsyncFd<Notifying<Receiver>>,
    wait: WaitStrategy,
}

impl AsyncReceiver {
    /// Switches `rx` into notifying mode and registers its doorbell with the current
    /// tokio runtime (call from within one).
    pub fn new(rx: Receiver) -> Result<AsyncReceiver> {
        Ok(AsyncReceiver { inner: async_fd(rx)?, wait: WaitStrategy::default() })
    }

    /// How long a receive spins before it awaits the doorbell (at most [`MAX_SPIN`]):
    /// `BusySpin`/`Adaptive` spin, `Block` awaits at once.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        self.inner.get_mut().set_wait_strategy(wait);
    }

    /// The receiver itself, for its non-waiting operations (`try_recv`, `recv_ref`
    /// ...). Its `try_*` calls keep the [`Notifying`] contract for this end.
    pub fn get_mut(&mut self) -> &mut Receiver {
        self.inner.get_mut()
    }

    /// Receives the next message into `buf` (resized to it), waiting for one;
    /// `Disconnected`/`PeerDead` once the sender is gone and every message it sent has
    /// been received.
    ///
    /// This method is cancel safe: a message is taken only by the synchronous
    /// `try_recv` inside, so a future dropped before it completes (in `select!`, or
    /// by a timeout) has taken nothing, and the next call gets the message.
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> std::result::Result<usize, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx, buf)).await
    }

    /// The receive step behind [`recv`](Self::recv) and the `Stream`: `Pending` with
    /// the task registered for the doorbell if the channel is empty.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<std::result::Result<usize, RecvError>> {
        let budget = spin_budget(self.wait);
        // A look before the spin: a waiting message is taken without reading a clock.
        if !self.inner.get_mut().has_message() {
            spin_until(budget, || self.inner.get_mut().has_message());
        }
        loop {
            match self.inner.get_mut().try_recv(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    return Poll::Ready(Err(RecvError::Disconnected))
                }
                Err(TryRecvError::PeerDead { pid }) => {
                    return Poll::Ready(Err(RecvError::PeerDead { pid }))
                }
                Err(TryRecvError::Corrupt { what }) => {
                    return Poll::Ready(Err(RecvError::Corrupt { what }))
                }
            }
            // Armed by the `Empty` above: a message sent from now on rings the doorbell.
            if let Err(what) = ready!(poll_rung(&mut self.inner, cx)) {
                return Poll::Ready(Err(RecvError::Corrupt { what }));
            }
        }
    }
}

impl futures_core::Stream for AsyncReceiver {
    /// Each message as a new `Vec<u8>`; the stream ends when the sender has closed its
    /// end (after its last message) and yields an error for anything else.
    type Item = std::result::Result<Vec<u8>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut buf = Vec::new();
        match ready!(this.poll_recv(cx, &mut buf)) {
            Ok(_) => Poll::Ready(Some(Ok(buf))),
            Err(RecvError::Disconnected) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// The sending end of an SPSC channel, awaited on a tokio runtime: a send waits for
/// room in a full ring without blocking the thread.
#[derive(Debug)]
pub struct AsyncSender {
    inner: AsyncFd<Notifying<Sender>>,
    wait: WaitStrategy,
}

impl AsyncSender {
    /// Switches `tx` into notifying mode and registers its doorbell with the current
    /// tokio runtime (call from within one).
    pub fn new(tx: Sender) -> Result<AsyncSender> {
        Ok(AsyncSender { inner: async_fd(tx)?, wait: WaitStrategy::default() })
    }

    /// How long a send into a full ring spins before it awaits room (at most
    /// [`MAX_SPIN`]).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        self.inner.get_mut().set_wait_strategy(wait);
    }

    /// The sender itself, for its non-waiting operations (`try_send`, `try_loan` ...).
    pub fn get_mut(&mut self) -> &mut Sender {
        self.inner.get_mut()
    }

    /// Sends `msg`, waiting for room while the ring is full.
    ///
    /// This method is cancel safe: the message is written only by the synchronous
    /// `try_send` inside, whole or not at all, so a future dropped before it completes
    /// has sent nothing.
    pub async fn send<'a>(
        &mut self,
        msg: &'a [u8],
    ) -> std::result::Result<(), SendError<&'a [u8]>> {
        std::future::poll_fn(|cx| self.poll_send(cx, msg)).await
    }

    /// The send step behind [`send`](Self::send).
    pub fn poll_send<'a>(
        &mut self,
        cx: &mut Context<'_>,
        msg: &'a [u8],
    ) -> Poll<std::result::Result<(), SendError<&'a [u8]>>> {
        // Spin on a look that does not arm (an armed `try_send` drains the doorbell, a
        // system call per look).
        let tx = self.inner.get_mut();
        if !tx.has_room(msg.len()) {
            spin_until(spin_budget(self.wait), || tx.has_room(msg.len()));
        }
        loop {
            let err = match self.inner.get_mut().try_send(msg) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(TrySendError::Full(_)) => None,
                Err(TrySendError::Disconnected(msg)) => Some(SendError::Disconnected(msg)),
                Err(TrySendError::PeerDead { msg, pid }) => Some(SendError::PeerDead { msg, pid }),
                Err(TrySendError::TooLarge { msg, max }) => Some(SendError::TooLarge { msg, max }),
                Err(TrySendError::Corrupt { msg, what }) => Some(SendError::Corrupt { msg, what }),
            };
            if let Some(err) = err {
                return Poll::Ready(Err(err));
            }
            // Armed by the `Full` above: room freed from now on rings the doorbell.
            if let Err(what) = ready!(poll_rung(&mut self.inner, cx)) {
                return Poll::Ready(Err(SendError::Corrupt { msg, what }));
            }
        }
    }
}
