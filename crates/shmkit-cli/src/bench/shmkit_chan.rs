//! shmkit itself: a pair of SPSC channels in POSIX shared memory (`TAG.req`, `TAG.rep`),
//! created by pong; the row's mechanism picks the wait strategy of both sides.

use std::io;

use shmkit::channel::spsc::Config;
use shmkit::channel::{Receiver, Sender, WaitStrategy};
use shmkit::Name;

use super::mech::{exact, Ctx, Link, Mech};

pub struct Shmkit {
    tx: Sender,
    rx: Receiver,
}

fn wait_strategy(mech: Mech) -> WaitStrategy {
    match mech {
        Mech::ShmkitSpin => WaitStrategy::BusySpin,
        Mech::ShmkitBlock | Mech::ShmkitTokioBlock => WaitStrategy::Block,
        _ => WaitStrategy::default(),
    }
}

fn names(ctx: &Ctx) -> (Name, Name) {
    (Name::Posix(ctx.posix_name("req")), Name::Posix(ctx.posix_name("rep")))
}

impl Shmkit {
    fn new(mut tx: Sender, mut rx: Receiver, mech: Mech) -> Shmkit {
        tx.set_wait_strategy(wait_strategy(mech));
        rx.set_wait_strategy(wait_strategy(mech));
        Shmkit { tx, rx }
    }
}

/// Ring bytes of a row's shmkit channels (SPSC, and broadcast, so that the two compare
/// like for like): room for a few messages in flight while streaming, whatever the size.
pub fn ring_bytes(size: usize) -> usize {
    (4 * size).next_power_of_two().max(1 << 20)
}

impl Link for Shmkit {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Shmkit> {
        let config = Config { capacity: ring_bytes(ctx.size), ..Config::default() };
        let (req, rep) = names(ctx);
        let rx = Receiver::create(&req, &config).map_err(io::Error::other)?;
        let tx = Sender::create(&rep, &config).map_err(io::Error::other)?;
        ready("")?;
        Ok(Shmkit::new(tx, rx, ctx.mech))
    }

    fn ping(ctx: &Ctx, _rendezvous: &str) -> io::Result<Shmkit> {
        let (req, rep) = names(ctx);
        let tx = Sender::open(&req).map_err(io::Error::other)?;
        let rx = Receiver::open(&rep).map_err(io::Error::other)?;
        Ok(Shmkit::new(tx, rx, ctx.mech))
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.tx.send(msg).map_err(|e| io::Error::other(e.to_string()))
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        exact(self.rx.recv_into(buf).map_err(io::Error::other)?, buf.len())
    }
}

/// The pair on current-thread tokio runtimes (`shmkit::tokio`). Each `send` and `recv`
/// polls the async operation once, as a task looping over it would (a message that is
/// there is taken at once), and only when that is `Pending` hands it to `block_on`,
/// which awaits the doorbell: a `block_on` per message would time the runtime's entry
/// and exit, which a task running its loop does not pay. The operation itself spins
/// up to 50 µs first for `shmkit-tokio`, and not at all for `shmkit-tokio-block`.
#[cfg(feature = "tokio")]
pub struct ShmkitTokio {
    rt: tokio::runtime::Runtime,
    tx: shmkit::tokio::AsyncSender,
    rx: shmkit::tokio::AsyncReceiver,
    buf: Vec<u8>,
}

#[cfg(feature = "tokio")]
impl ShmkitTokio {
    fn new(tx: Sender, rx: Receiver, mech: Mech) -> io::Result<ShmkitTokio> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        let (tx, rx) = rt
            .block_on(async {
                let mut tx = shmkit::tokio::AsyncSender::new(tx)?;
                let mut rx = shmkit::tokio::AsyncReceiver::new(rx)?;
                tx.set_wait_strategy(wait_strategy(mech));
                rx.set_wait_strategy(wait_strategy(mech));
                Ok::<_, shmkit::Error>((tx, rx))
            })
            .map_err(io::Error::other)?;
        Ok(ShmkitTokio { rt, tx, rx, buf: Vec::new() })
    }
}

#[cfg(feature = "tokio")]
impl Link for ShmkitTokio {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<ShmkitTokio> {
        let Shmkit { tx, rx } = Shmkit::pong(ctx, ready)?;
        ShmkitTokio::new(tx, rx, ctx.mech)
    }

    fn ping(ctx: &Ctx, rendezvous: &str) -> io::Result<ShmkitTokio> {
        let Shmkit { tx, rx } = Shmkit::ping(ctx, rendezvous)?;
        ShmkitTokio::new(tx, rx, ctx.mech)
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        run(&self.rt, self.tx.send(msg)).map_err(|e| io::Error::other(e.to_string()))
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        run(&self.rt, self.rx.recv(&mut self.buf)).map_err(io::Error::other)?;
        super::mech::copy_exact(&self.buf, buf)
    }
}

/// Polls `fut` once (inside the runtime's context, with a waker that does nothing),
/// and if it is not done, `block_on`s it to the end.
#[cfg(feature = "tokio")]
fn run<F: std::future::Future>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output {
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    const VTABLE: RawWakerVTable = RawWakerVTable::new(|_| RAW, |_| {}, |_| {}, |_| {});
    const RAW: RawWaker = RawWaker::new(std::ptr::null(), &VTABLE);
    // SAFETY: every function of the vtable ignores the (null) data pointer and does
    // nothing, which is a valid waker (one that never wakes).
    let waker = unsafe { Waker::from_raw(RAW) };
    let mut fut = std::pin::pin!(fut);
    {
        let _in_runtime = rt.enter();
        if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            return out;
        }
    }
    rt.block_on(fut)
}
