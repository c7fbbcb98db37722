//! Async ends on tokio (cargo feature `tokio`): [`AsyncReceiver`] and [`AsyncSender`]
//! over SPSC channels, [`AsyncSubscriber`] and [`AsyncPublisher`] over broadcast
//! channels, [`AsyncClient`] and [`AsyncServer`] over rpc services,
//! [`AsyncMpscReceiver`] and [`AsyncMpscSender`] over MPSC channels, and
//! [`futures_core::Stream`] for receivers and subscribers.
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

use crate::channel::broadcast::{self, Publisher, Subscriber};
use crate::channel::mpsc;
use crate::channel::rpc::{CallError, Client, Server};
use crate::channel::spsc::ReadGrant;
use crate::channel::{
    NotifyEnd, Notifying, Receiver, RecvError, SendError, Sender, TryRecvError, TrySendError,
    WaitStrategy,
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

/// A non-waiting receive's outcome as a waiting receive's: `None` for `Empty` (which
/// has armed a notifying end), the rest as `RecvError` (SPSC and MPSC share both).
fn received<T>(
    r: std::result::Result<T, TryRecvError>,
) -> Option<std::result::Result<T, RecvError>> {
    match r {
        Ok(v) => Some(Ok(v)),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => Some(Err(RecvError::Disconnected)),
        Err(TryRecvError::PeerDead { pid }) => Some(Err(RecvError::PeerDead { pid })),
        Err(TryRecvError::Corrupt { what }) => Some(Err(RecvError::Corrupt { what })),
    }
}

fn async_fd<E: crate::channel::NotifyEnd>(end: E) -> Result<AsyncFd<Notifying<E>>> {
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

    /// The end itself, for what does not wait (its segment, limits, counters).
    pub fn get_ref(&self) -> &Receiver {
        self.inner.get_ref()
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
    #[inline]
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> std::result::Result<usize, RecvError> {
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
    ) -> Poll<std::result::Result<usize, RecvError>> {
        let rx = self.inner.get_mut();
        if rx.has_message() {
            if let Ok(n) = rx.try_recv(buf) {
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
    ) -> Poll<std::result::Result<usize, RecvError>> {
        poll_op(
            &mut self.inner,
            cx,
            spin_budget(self.wait),
            // The blocking receive's first looks (which keep a streaming sender's lines
            // to itself), then plain ones.
            |rx| rx.look_before_waiting() || rx.has_message(),
            // `Empty` has armed: a message sent from now on rings the doorbell.
            |rx| received(rx.try_recv(buf)),
            |what| Err(RecvError::Corrupt { what }),
        )
    }
}

impl AsyncReceiver {
    /// Lends the next message in place (zero-copy), waiting for one; it is released
    /// when the grant is dropped.
    ///
    /// This method is cancel safe: nothing is taken until the grant is returned.
    pub async fn recv_ref(&mut self) -> std::result::Result<ReadGrant<'_>, RecvError> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await?;
        // The message `poll_message` saw is still there: only this end takes messages.
        received(self.inner.get_mut().try_recv_ref())
            .unwrap_or_else(|| Err(RecvError::Corrupt { what: "a seen message vanished".into() }))
    }

    /// Ready once a message is there (not taken), or the channel has ended.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), RecvError>> {
        let rx = self.inner.get_mut();
        if rx.has_message() {
            return Poll::Ready(Ok(()));
        }
        poll_op(
            &mut self.inner,
            cx,
            spin_budget(self.wait),
            |rx| rx.look_before_waiting() || rx.has_message(),
            |rx| received(rx.peek_or_arm()),
            |what| Err(RecvError::Corrupt { what }),
        )
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

    /// The end itself, for what does not wait (its segment, limits, counters).
    pub fn get_ref(&self) -> &Sender {
        self.inner.get_ref()
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
    #[inline]
    pub async fn send<'a>(
        &mut self,
        msg: &'a [u8],
    ) -> std::result::Result<(), SendError<&'a [u8]>> {
        std::future::poll_fn(|cx| self.poll_send(cx, msg)).await
    }

    /// The send step behind [`send`](Self::send).
    // Inlined down to a send that finds room (see `AsyncReceiver::poll_recv`).
    #[inline(always)]
    pub fn poll_send<'a>(
        &mut self,
        cx: &mut Context<'_>,
        msg: &'a [u8],
    ) -> Poll<std::result::Result<(), SendError<&'a [u8]>>> {
        let tx = self.inner.get_mut();
        if tx.has_room(msg.len()) && tx.try_send(msg).is_ok() {
            return Poll::Ready(Ok(()));
        }
        self.poll_send_waiting(cx, msg)
    }

    /// [`poll_send`](Self::poll_send) once the first look found no room.
    #[inline(never)]
    fn poll_send_waiting<'a>(
        &mut self,
        cx: &mut Context<'_>,
        msg: &'a [u8],
    ) -> Poll<std::result::Result<(), SendError<&'a [u8]>>> {
        // Spin on a look that does not arm (an armed `try_send` drains the doorbell, a
        // system call per look).
        poll_op(
            &mut self.inner,
            cx,
            spin_budget(self.wait),
            |tx| tx.has_room(msg.len()),
            |tx| match tx.try_send(msg) {
                Ok(()) => Some(Ok(())),
                // Armed: room freed from now on rings the doorbell.
                Err(TrySendError::Full(_)) => None,
                Err(e) => Some(Err(send_error(e))),
            },
            |what| Err(SendError::Corrupt { msg, what }),
        )
    }
}

/// A non-waiting send's failure (other than `Full`) as a waiting send's.
fn send_error<M>(e: TrySendError<M>) -> SendError<M> {
    match e {
        // (Not reached: the callers wait on `Full`.)
        TrySendError::Full(msg) => SendError::Corrupt { msg, what: "full".into() },
        TrySendError::Disconnected(msg) => SendError::Disconnected(msg),
        TrySendError::PeerDead { msg, pid } => SendError::PeerDead { msg, pid },
        TrySendError::TooLarge { msg, max } => SendError::TooLarge { msg, max },
        TrySendError::Corrupt { msg, what } => SendError::Corrupt { msg, what },
    }
}

/// A subscriber of a broadcast channel, awaited on a tokio runtime.
#[derive(Debug)]
pub struct AsyncSubscriber {
    inner: AsyncFd<Notifying<Subscriber>>,
    wait: WaitStrategy,
}

impl AsyncSubscriber {
    /// Switches `sub` into notifying mode and registers its doorbell with the current
    /// tokio runtime (call from within one).
    pub fn new(sub: Subscriber) -> Result<AsyncSubscriber> {
        Ok(AsyncSubscriber { inner: async_fd(sub)?, wait: WaitStrategy::default() })
    }

    /// The end itself, for what does not wait (its segment, limits, counters).
    pub fn get_ref(&self) -> &Subscriber {
        self.inner.get_ref()
    }

    /// How long a receive spins before it awaits the doorbell (at most [`MAX_SPIN`]).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        self.inner.get_mut().set_wait_strategy(wait);
    }

    /// The subscriber itself, for its non-waiting operations.
    pub fn get_mut(&mut self) -> &mut Subscriber {
        self.inner.get_mut()
    }

    /// Receives the next message into `buf` (resized to it), waiting for one;
    /// `Lagged` if it was overwritten before this subscriber got to it (the next call
    /// continues with the oldest message left), `Disconnected`/`PeerDead` once the
    /// publisher is gone and everything it published has been received.
    ///
    /// This method is cancel safe: a message is taken only by the synchronous
    /// `try_recv` inside, so a future dropped before it completes has taken nothing.
    pub async fn recv(
        &mut self,
        buf: &mut Vec<u8>,
    ) -> std::result::Result<usize, broadcast::RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx, buf)).await
    }

    /// The receive step behind [`recv`](Self::recv) and the `Stream`.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<std::result::Result<usize, broadcast::RecvError>> {
        use broadcast::{RecvError as E, TryRecvError as T};
        poll_op(
            &mut self.inner,
            cx,
            spin_budget(self.wait),
            |sub| sub.has_message(),
            |sub| match sub.try_recv(buf) {
                Ok(n) => Some(Ok(n)),
                Err(T::Empty) => None,
                Err(T::Lagged { missed }) => Some(Err(E::Lagged { missed })),
                Err(T::Disconnected) => Some(Err(E::Disconnected)),
                Err(T::PeerDead { pid }) => Some(Err(E::PeerDead { pid })),
                Err(T::Corrupt { what }) => Some(Err(E::Corrupt { what })),
            },
            |what| Err(E::Corrupt { what }),
        )
    }
}

impl futures_core::Stream for AsyncSubscriber {
    /// Each message as a new `Vec<u8>`, or `Lagged` (and the stream goes on); the stream
    /// ends when the publisher has closed the channel (after its last message).
    type Item = std::result::Result<Vec<u8>, broadcast::RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut buf = Vec::new();
        match ready!(self.get_mut().poll_recv(cx, &mut buf)) {
            Ok(_) => Poll::Ready(Some(Ok(buf))),
            Err(broadcast::RecvError::Disconnected) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// The publisher of a broadcast channel, awaited on a tokio runtime: under
/// backpressure a send waits for the slowest subscriber without blocking the thread
/// (under `Overwrite` it never waits).
#[derive(Debug)]
pub struct AsyncPublisher {
    inner: AsyncFd<Notifying<Publisher>>,
    wait: WaitStrategy,
}

impl AsyncPublisher {
    /// Switches `publisher` into notifying mode and registers its doorbell with the
    /// current tokio runtime (call from within one).
    pub fn new(publisher: Publisher) -> Result<AsyncPublisher> {
        Ok(AsyncPublisher { inner: async_fd(publisher)?, wait: WaitStrategy::default() })
    }

    /// The end itself, for what does not wait (its segment, limits, counters).
    pub fn get_ref(&self) -> &Publisher {
        self.inner.get_ref()
    }

    /// How long a send spins for room before it awaits the doorbell (at most
    /// [`MAX_SPIN`]).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        self.inner.get_mut().set_wait_strategy(wait);
    }

    /// The publisher itself, for its non-waiting operations.
    pub fn get_mut(&mut self) -> &mut Publisher {
        self.inner.get_mut()
    }

    /// Publishes `msg`, waiting for room under backpressure.
    ///
    /// This method is cancel safe: the message is written only by the synchronous
    /// `try_send` inside, whole or not at all.
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
        poll_op(
            &mut self.inner,
            cx,
            spin_budget(self.wait),
            |publisher| publisher.has_room_now(),
            |publisher| match publisher.try_send(msg) {
                Ok(()) => Some(Ok(())),
                Err(TrySendError::Full(_)) => None,
                Err(e) => Some(Err(send_error(e))),
            },
            |what| Err(SendError::Corrupt { msg, what }),
        )
    }
}

/// A client of an rpc service, awaited on a tokio runtime.
#[derive(Debug)]
pub struct AsyncClient {
    inner: AsyncFd<Notifying<Client>>,
    wait: WaitStrategy,
}

impl AsyncClient {
    /// Switches `client` into notifying mode and registers its doorbell with the
    /// current tokio runtime (call from within one).
    pub fn new(client: Client) -> Result<AsyncClient> {
        Ok(AsyncClient { inner: async_fd(client)?, wait: WaitStrategy::default() })
    }

    /// The end itself, for what does not wait (its segment, limits, counters).
    pub fn get_ref(&self) -> &Client {
        self.inner.get_ref()
    }

    /// How long a call spins for its reply before it awaits the doorbell (at most
    /// [`MAX_SPIN`]).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        self.inner.get_mut().set_wait_strategy(wait);
    }

    /// The client itself.
    pub fn get_mut(&mut self) -> &mut Client {
        self.inner.get_mut()
    }

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

/// The server of an rpc service, awaited on a tokio runtime.
#[derive(Debug)]
pub struct AsyncServer {
    inner: AsyncFd<Notifying<Server>>,
}

impl AsyncServer {
    /// Switches `server` into notifying mode and registers its doorbell with the
    /// current tokio runtime (call from within one).
    pub fn new(server: Server) -> Result<AsyncServer> {
        Ok(AsyncServer { inner: async_fd(server)? })
    }

    /// The end itself, for what does not wait (its segment, limits, counters).
    pub fn get_ref(&self) -> &Server {
        self.inner.get_ref()
    }

    /// The server itself.
    pub fn get_mut(&mut self) -> &mut Server {
        self.inner.get_mut()
    }

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

/// The receiver of an MPSC channel, awaited on a tokio runtime.
#[derive(Debug)]
pub struct AsyncMpscReceiver {
    inner: AsyncFd<Notifying<mpsc::Receiver>>,
    wait: WaitStrategy,
}

impl AsyncMpscReceiver {
    /// Switches `rx` into notifying mode and registers its doorbell with the current
    /// tokio runtime (call from within one).
    pub fn new(rx: mpsc::Receiver) -> Result<AsyncMpscReceiver> {
        Ok(AsyncMpscReceiver { inner: async_fd(rx)?, wait: WaitStrategy::default() })
    }

    /// The receiver itself, for what does not wait.
    pub fn get_ref(&self) -> &mpsc::Receiver {
        self.inner.get_ref()
    }

    /// The receiver itself, for its non-waiting operations.
    pub fn get_mut(&mut self) -> &mut mpsc::Receiver {
        self.inner.get_mut()
    }

    /// How long a receive spins before it awaits the doorbell (at most [`MAX_SPIN`]).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        self.inner.get_mut().set_wait_strategy(wait);
    }

    /// Receives the next message from any sender into `buf`, waiting for one;
    /// `Disconnected` once every sender that joined has gone and all they sent has been
    /// received.
    ///
    /// This method is cancel safe: a message is taken only by the synchronous
    /// `try_recv` inside.
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> std::result::Result<usize, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx, buf)).await
    }

    /// The receive step behind [`recv`](Self::recv) and the `Stream`.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<std::result::Result<usize, RecvError>> {
        poll_op(
            &mut self.inner,
            cx,
            spin_budget(self.wait),
            |rx| rx.has_message(),
            |rx| received(rx.try_recv(buf)),
            |what| Err(RecvError::Corrupt { what }),
        )
    }
}

impl futures_core::Stream for AsyncMpscReceiver {
    /// Each message as a new `Vec<u8>`; the stream ends once every sender has gone.
    type Item = std::result::Result<Vec<u8>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut buf = Vec::new();
        match ready!(self.get_mut().poll_recv(cx, &mut buf)) {
            Ok(_) => Poll::Ready(Some(Ok(buf))),
            Err(RecvError::Disconnected) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// One sender of an MPSC channel, awaited on a tokio runtime: a send waits for room in
/// its lane without blocking the thread.
#[derive(Debug)]
pub struct AsyncMpscSender {
    inner: AsyncFd<Notifying<mpsc::Sender>>,
    wait: WaitStrategy,
}

impl AsyncMpscSender {
    /// Switches `tx` into notifying mode and registers its doorbell with the current
    /// tokio runtime (call from within one).
    pub fn new(tx: mpsc::Sender) -> Result<AsyncMpscSender> {
        Ok(AsyncMpscSender { inner: async_fd(tx)?, wait: WaitStrategy::default() })
    }

    /// The sender itself, for what does not wait.
    pub fn get_ref(&self) -> &mpsc::Sender {
        self.inner.get_ref()
    }

    /// The sender itself, for its non-waiting operations.
    pub fn get_mut(&mut self) -> &mut mpsc::Sender {
        self.inner.get_mut()
    }

    /// Sends `msg`, waiting for room in this sender's lane.
    ///
    /// This method is cancel safe: the message is written only by the synchronous
    /// `try_send` inside, whole or not at all.
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
        poll_op(
            &mut self.inner,
            cx,
            spin_budget(self.wait),
            |tx| tx.has_room(msg.len()),
            |tx| match tx.try_send(msg) {
                Ok(()) => Some(Ok(())),
                Err(TrySendError::Full(_)) => None,
                Err(e) => Some(Err(send_error(e))),
            },
            |what| Err(SendError::Corrupt { msg, what }),
        )
    }
}
