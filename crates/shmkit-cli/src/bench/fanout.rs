//! shmkit's broadcast channel with 1, 2, 4 or 8 subscriber processes, under
//! backpressure so every subscriber gets every message. The first subscriber (pong)
//! echoes round trips back over an SPSC channel; the others (sinks) only consume and
//! check the numbering. Streaming figures are the publisher's rate with all of them
//! keeping up.

use std::io;

use shmkit::channel::broadcast::{self, Overflow, Publisher, Subscriber};
use shmkit::channel::spsc::Config;
use shmkit::channel::{Receiver, Sender};
use shmkit::Name;

use super::harness::{FINAL, PHASE_END};
use super::mech::{copy_exact, exact, Ctx, Link};
use super::shmkit_chan::ring_bytes;

pub struct Fanout {
    end: End,
}

enum End {
    Publisher(Publisher, Receiver),
    Subscriber(Subscriber, Sender),
}

fn names(ctx: &Ctx) -> (Name, Name) {
    (Name::Posix(ctx.posix_name("bcast")), Name::Posix(ctx.posix_name("rep")))
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Link for Fanout {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Fanout> {
        let (bcast, rep) = names(ctx);
        // As many bytes of slots as the SPSC rows' ring: a broadcast ring of 256 slots
        // (32 KiB at 64 B) streamed at half the SPSC rows' rate for its size alone.
        let slot_bytes = (broadcast::SLOT_HEADER + ctx.size).div_ceil(64) * 64;
        let slots = (ring_bytes(ctx.size) / slot_bytes).clamp(4, 1 << 24);
        let config = broadcast::Config {
            slots: 1 << slots.ilog2(),
            max_message: ctx.size,
            subscribers: 8,
            overflow: Overflow::Backpressure,
            ..broadcast::Config::default()
        };
        let sub = Subscriber::create(&bcast, &config).map_err(other)?;
        let config = Config { capacity: ring_bytes(ctx.size), ..Config::default() };
        let tx = Sender::create(&rep, &config).map_err(other)?;
        ready("")?;
        Ok(Fanout { end: End::Subscriber(sub, tx) })
    }

    fn ping(ctx: &Ctx, _rendezvous: &str) -> io::Result<Fanout> {
        let (bcast, rep) = names(ctx);
        let publisher = Publisher::open(&bcast).map_err(other)?;
        let rx = Receiver::open(&rep).map_err(other)?;
        Ok(Fanout { end: End::Publisher(publisher, rx) })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match &mut self.end {
            End::Publisher(p, _) => p.send(msg).map_err(other),
            End::Subscriber(_, tx) => tx.send(msg).map_err(other),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match &mut self.end {
            End::Publisher(_, rx) => exact(rx.recv_into(buf).map_err(other)?, buf.len()),
            End::Subscriber(sub, _) => copy_exact(&sub.recv_ref().map_err(other)?, buf),
        }
    }
}

/// A silent subscriber: consumes everything, checks the stream's numbering, and says
/// how many messages it streamed and how many were out of order.
pub fn sink(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<(u64, u64)> {
    let (bcast, _) = names(ctx);
    let mut sub = Subscriber::open(&bcast).map_err(other)?;
    ready("")?;
    let seq_of = |g: &[u8]| u64::from_le_bytes(g[..8].try_into().unwrap_or([0; 8]));
    loop {
        let g = sub.recv_ref().map_err(other)?;
        if g.len() >= 8 && seq_of(&g) == PHASE_END {
            break;
        }
    }
    let (mut received, mut errors) = (0u64, 0u64);
    loop {
        let g = sub.recv_ref().map_err(other)?;
        let seq = seq_of(&g);
        if g.len() != ctx.size || seq & !FINAL != received {
            errors += 1;
        }
        received += 1;
        if seq & FINAL != 0 {
            return Ok((received, errors));
        }
    }
}
