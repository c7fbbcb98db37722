//! shmkit itself: a pair of SPSC channels in POSIX shared memory (`TAG.req`, `TAG.rep`),
//! created by pong; the row's mechanism picks the wait strategy of both sides.

use std::io;

use shmkit::channel::spsc::Config;
use shmkit::channel::{Receiver, Sender, WaitStrategy};
use shmkit::Name;

use super::mech::{invalid, Ctx, Link, Mech};

pub struct Shmkit {
    tx: Sender,
    rx: Receiver,
}

fn wait_strategy(mech: Mech) -> WaitStrategy {
    match mech {
        Mech::ShmkitSpin => WaitStrategy::BusySpin,
        Mech::ShmkitBlock => WaitStrategy::Block,
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
        let n = self.rx.recv_into(buf).map_err(io::Error::other)?;
        if n != buf.len() {
            return Err(invalid(format!("received a {n}-byte message, expected {}", buf.len())));
        }
        Ok(())
    }
}
