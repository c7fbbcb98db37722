//! Async ends on tokio (cargo feature `tokio`): one adapter, [`Async<E>`], over every
//! end of the [end vocabulary](crate::channel::end) — receivers and subscribers
//! ([`RecvEnd`]: `recv`, `recv_ref`, and [`futures_core::Stream`]), senders and
//! publishers ([`SendEnd`]: `send`), rpc clients (`call`) and servers (`serve`). The
//! aliases ([`AsyncReceiver`], [`AsyncSubscriber`], ...) name its uses.
//!
//! It wraps an end in notifying mode ([`Notifying`]) in a
//! [`tokio::io::unix::AsyncFd`] on its doorbell. An operation first tries without
//! waiting; only when the channel is empty (or full) does it spin briefly, as the
//! end's wait strategy says, on a look that never arms (`has_message`, `has_room`),
//! and then arm the end and await the doorbell. With traffic flowing, no epoll round
//! trip and no system call is made per message.
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

use crate::channel::rpc::{CallError, Client, Server};
use crate::channel::{
    broadcast, mpsc, spsc, End, Failure, FromFailure, NotifyEnd, Notifying, RecvEnd, SendEnd,
    SendError, WaitStrategy,
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
fn poll_rung<E: NotifyEnd>(
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

/// One async operation on an end in notifying mode: spins up to `budget` on `look` (a
/// check that never arms), then calls `attempt` until it has an outcome, awaiting the
/// doorbell each time it reports (`None`) that it found nothing and armed the end.
/// `shutdown` turns the runtime's refusal into the operation's error.
fn poll_op<E: NotifyEnd, T>(
    fd: &mut AsyncFd<Notifying<E>>,
    cx: &mut Context<'_>,
    budget: Duration,
    mut look: impl FnMut(&mut E) -> bool,
    mut attempt: impl FnMut(&mut E) -> Option<T>,
    shutdown: impl FnOnce(String) -> T,
) -> Poll<T> {
    let end: &mut E = fd.get_mut();
    // A look before the spin: ready work is taken without reading a clock.
    if !look(end) {
        spin_until(budget, || look(end));
    }
    loop {
        if let Some(outcome) = attempt(fd.get_mut()) {
            return Poll::Ready(outcome);
        }
        if let Err(what) = ready!(poll_rung(fd, cx)) {
            return Poll::Ready(shutdown(what));
        }
    }
}

/// A non-waiting operation's outcome as a waiting one's: `None` for `Empty`/`Full`
/// (which has armed a notifying end), the rest as it is.
fn waited<T>(r: std::result::Result<T, Failure>) -> Option<std::result::Result<T, Failure>> {
    match r {
        Err(Failure::Empty | Failure::Full) => None,
        other => Some(other),
    }
}

fn async_fd<E: NotifyEnd>(end: E) -> Result<AsyncFd<Notifying<E>>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(crate::Error::Runtime(
            "an async shmkit end must be made inside a tokio runtime".into(),
        ));
    }
    let end = Notifying::new(end)?;
    // SAFETY: the doorbell socket is owned by `end` for its whole life (it is dropped
    // only with the end), and `as_raw_fd` returns that same fd on every call.
    unsafe { AsyncFd::register_with_interest(end, Interest::READABLE) }.map_err(|e| {
        crate::Error::Runtime(format!("cannot register a doorbell: {}", e.into_parts().1))
    })
}

/// An end awaited on a tokio runtime: what it does depends on the end ([`RecvEnd`]:
/// `recv`, `recv_ref`, `Stream`; [`SendEnd`]: `send`; [`Client`]: `call`;
/// [`Server`]: `serve`).
#[derive(Debug)]
pub struct Async<E: NotifyEnd> {
    inner: AsyncFd<Notifying<E>>,
    wait: WaitStrategy,
}

/// The receiving end of an SPSC channel, awaited.
pub type AsyncReceiver = Async<spsc::Receiver>;
/// The sending end of an SPSC channel, awaited: a send waits for room without blocking
/// the thread.
pub type AsyncSender = Async<spsc::Sender>;
/// A subscriber of a broadcast channel, awaited.
pub type AsyncSubscriber = Async<broadcast::Subscriber>;
/// The publisher of a broadcast channel, awaited: under backpressure a send waits for
/// the slowest subscriber without blocking the thread (under `Overwrite` it never
/// waits).
pub type AsyncPublisher = Async<broadcast::Publisher>;
/// The receiver of an MPSC channel, awaited.
pub type AsyncMpscReceiver = Async<mpsc::Receiver>;
/// One sender of an MPSC channel, awaited: a send waits for room in its lane.
pub type AsyncMpscSender = Async<mpsc::Sender>;
/// A client of an rpc service, awaited.
pub type AsyncClient = Async<Client>;
/// The server of an rpc service, awaited.
pub type AsyncServer = Async<Server>;

impl<E: End> Async<E> {
    /// Switches `end` into notifying mode and registers its doorbell with the current
    /// tokio runtime (call from within one).
    pub fn new(end: E) -> Result<Async<E>> {
        Ok(Async { inner: async_fd(end)?, wait: WaitStrategy::default() })
    }

    /// The end itself, for what does not wait (its segment, limits, counters).
    pub fn get_ref(&self) -> &E {
        self.inner.get_ref()
    }

    /// The end itself, for its non-waiting operations (`try_recv`, `try_send` ...).
    /// Its `try_*` calls keep the [`Notifying`] contract for this end.
    pub fn get_mut(&mut self) -> &mut E {
        self.inner.get_mut()
    }

    /// The end, still in notifying mode, deregistered from the runtime.
    pub fn into_inner(self) -> E {
        self.inner.into_inner().into_inner()
    }

    /// How long an operation spins before it awaits the doorbell (at most
    /// [`MAX_SPIN`]): `BusySpin`/`Adaptive` spin, `Block` awaits at once.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        self.inner.get_mut().set_wait_strategy(wait);
    }
}

impl<E: RecvEnd> Async<E> {
    /// Receives the next message into `buf` (resized to it), waiting for one;
    /// `Disconnected`/`PeerDead` once the sending side is gone and every message it
    /// sent has been received (a broadcast subscriber also gets `Lagged`: the next call
    /// goes on with the oldest message left).
    ///
    /// This method is cancel safe: a message is taken only by the synchronous
    /// non-waiting receive inside, so a future dropped before it completes (in
    /// `select!`, or by a timeout) has taken nothing, and the next call gets the
    /// message.
    #[inline]
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> std::result::Result<usize, E::RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx, buf)).await
    }

    /// The receive step behind [`recv`](Self::recv) and the `Stream`: `Pending` with
    /// the task registered for the doorbell if the channel is empty.
    // Inlined down to a message that is there: returned through a call, the result is
    // stored in pieces and loaded whole, a stall that costs a streaming receiver more
    // than the rest of the receive.
    #[inline(always)]
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<std::result::Result<usize, E::RecvError>> {
        self.poll_recv_failure(cx, buf).map_err(E::RecvError::from)
    }

    #[inline(always)]
    fn poll_recv_failure(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<std::result::Result<usize, Failure>> {
        let end = self.inner.get_mut();
        if end.has_message() {
            if let Ok(n) = end.recv_until(buf, crate::channel::Deadline::Now) {
                return Poll::Ready(Ok(n));
            }
        }
        self.poll_recv_waiting(cx, buf)
    }

    /// [`poll_recv`](Self::poll_recv) once no message is there at the first look.
    #[inline(never)]
    fn poll_recv_waiting(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<std::result::Result<usize, Failure>> {
        poll_op(
            &mut self.inner,
            cx,
            spin_budget(self.wait),
            // The blocking receive's first looks (an SPSC receiver's keep a streaming
            // sender's lines to itself), then plain ones.
            |end| end.look_before_waiting() || end.has_message(),
            // `Empty` has armed: a message sent from now on rings the doorbell.
            |end| waited(end.recv_until(buf, crate::channel::Deadline::Now)),
            |what| Err(Failure::Corrupt { what }),
        )
    }

    /// Lends the next message in place (zero-copy), waiting for one; it is released
    /// when the grant is dropped.
    ///
    /// This method is cancel safe: nothing is taken until the grant is returned.
    pub async fn recv_ref(&mut self) -> std::result::Result<E::Grant<'_>, E::RecvError> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await?;
        // The message `poll_message` saw is still there: only this end takes messages.
        match self.inner.get_mut().try_recv_ref() {
            Err(Failure::Empty) => Err(Failure::corrupt("a seen message vanished").into()),
            other => other.map_err(E::RecvError::from),
        }
    }

    /// Ready once a message is there (not taken), or the channel has ended.
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), E::RecvError>> {
        if self.inner.get_mut().has_message() {
            return Poll::Ready(Ok(()));
        }
        poll_op(
            &mut self.inner,
            cx,
            spin_budget(self.wait),
            |end| end.look_before_waiting() || end.has_message(),
            |end| match end.ready_or_arm() {
                Ok(true) => Some(Ok(())),
                Ok(false) => None,
                Err(f) => Some(Err(f)),
            },
            |what| Err(Failure::Corrupt { what }),
        )
        .map_err(E::RecvError::from)
    }
}

impl<E: RecvEnd> futures_core::Stream for Async<E> {
    /// Each message as a new `Vec<u8>` (or `Lagged`, for a subscriber, and the stream
    /// goes on); the stream ends when the sending side has closed its end (after its
    /// last message) and yields an error for anything else.
    type Item = std::result::Result<Vec<u8>, E::RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut buf = Vec::new();
        let this = self.get_mut();
        match ready!(this.poll_recv_failure(cx, &mut buf)) {
            Ok(_) => Poll::Ready(Some(Ok(buf))),
            Err(Failure::Disconnected) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }
}

// Nothing in the adapter relies on being pinned (the end is moved into it and is never
// borrowed across polls), whatever the end type.
impl<E: NotifyEnd> Unpin for Async<E> {}

impl<E: SendEnd> Async<E> {
    /// Sends `msg`, waiting for room while the ring is full (a broadcast publisher under
    /// backpressure: for the slowest subscriber).
    ///
    /// This method is cancel safe: the message is written only by the synchronous
    /// non-waiting send inside, whole or not at all, so a future dropped before it
    /// completes has sent nothing.
    #[inline]
    pub async fn send<'a>(
        &mut self,
        msg: &'a [u8],
    ) -> std::result::Result<(), SendError<&'a [u8]>> {
        std::future::poll_fn(|cx| self.poll_send(cx, msg)).await
    }

    /// The send step behind [`send`](Self::send).
    // Inlined down to a send that finds room (see `poll_recv`).
    #[inline(always)]
    pub fn poll_send<'a>(
        &mut self,
        cx: &mut Context<'_>,
        msg: &'a [u8],
    ) -> Poll<std::result::Result<(), SendError<&'a [u8]>>> {
        let end = self.inner.get_mut();
        if end.has_room(msg.len()) && end.try_send(msg).is_ok() {
            return Poll::Ready(Ok(()));
        }
        self.poll_send_waiting(cx, msg).map_err(|f| SendError::from_failure(f, msg))
    }

    /// [`poll_send`](Self::poll_send) once the first look found no room.
    #[inline(never)]
    fn poll_send_waiting(
        &mut self,
        cx: &mut Context<'_>,
        msg: &[u8],
    ) -> Poll<std::result::Result<(), Failure>> {
        // Spin on a look that does not arm (an armed `try_send` drains the doorbell, a
        // system call per look).
        poll_op(
            &mut self.inner,
            cx,
            spin_budget(self.wait),
            |end| end.has_room(msg.len()),
            // Armed on `Full`: room freed from now on rings the doorbell.
            |end| waited(end.try_send(msg)),
            |what| Err(Failure::Corrupt { what }),
        )
    }
}

impl Async<Client> {
    /// Sends `request` and waits for its reply, which is written to `reply` (resized).
    /// For a deadline, wrap the future in `tokio::time::timeout`.
    ///
    /// Cancelling is safe in that nothing is lost or mixed up: a call dropped before
    /// its reply came is abandoned (the server may still answer it; that late reply
    /// is recognised by its call number and discarded by the next call).
    pub async fn call(
        &mut self,
        request: &[u8],
        reply: &mut Vec<u8>,
    ) -> std::result::Result<(), CallError> {
        self.inner.get_mut().start_call(request)?;
        std::future::poll_fn(|cx| self.poll_reply(cx, reply)).await
    }

    /// The wait behind [`call`](Self::call): the reply to the call started last with
    /// [`Client::start_call`].
    pub fn poll_reply(
        &mut self,
        cx: &mut Context<'_>,
        reply: &mut Vec<u8>,
    ) -> Poll<std::result::Result<(), CallError>> {
        poll_op(
            &mut self.inner,
            cx,
            spin_budget(self.wait),
            |client| client.has_reply(),
            |client| match client.try_reply(reply) {
                Ok(true) => Some(Ok(())),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            },
            |what| Err(CallError::Corrupt { what }),
        )
    }
}

impl Async<Server> {
    /// Waits until there is at least one request, answers every request waiting
    /// then with `handler(request, reply)` (which runs on this task and should not
    /// block), and returns how many. Clients that connect, leave or die meanwhile are
    /// taken on or dropped as [`Server::poll`] does.
    ///
    /// This method is cancel safe: requests are taken only by the synchronous
    /// answering round inside, each answered before the next is taken.
    pub async fn serve_some(
        &mut self,
        mut handler: impl FnMut(&[u8], &mut Vec<u8>),
    ) -> Result<usize> {
        std::future::poll_fn(|cx| {
            poll_op(
                &mut self.inner,
                cx,
                Duration::ZERO,
                |_| false,
                |server| match server.poll(&mut handler) {
                    0 => None, // armed
                    n => Some(Ok(n)),
                },
                |what| Err(crate::Error::Runtime(what)),
            )
        })
        .await
    }

    /// Serves for good: [`serve_some`](Self::serve_some) in a loop that lets the
    /// runtime's other tasks run between rounds. Returns only if the runtime refuses
    /// the doorbell (it is shutting down).
    pub async fn serve(&mut self, mut handler: impl FnMut(&[u8], &mut Vec<u8>)) -> Result<()> {
        loop {
            self.serve_some(&mut handler).await?;
            ::tokio::task::yield_now().await;
        }
    }
}
