//! shmkit's MPSC channel with one sender: ping joins pong's MPSC channel as a sender
//! and takes the replies from an SPSC channel pong creates. The same messages and ring
//! bytes as the SPSC rows, so `shmkit-mpsc-1` against `shmkit-adaptive` is what a lane
//! (and the receiver's look over the lanes in use) costs.
//!
//! The rows with several senders (`shmkit-mpsc-2`, `-4`) add source processes: each
//! joins as a sender before ping starts and parks on a broadcast "go" channel while
//! ping times its round trips (so the latency is that of one sender among idle
//! others); when pong has echoed the last round trip it publishes "go" and every
//! sender streams at once. Pong ([`serve`]) checks each lane's numbering and measures
//! the aggregate rate and each sender's share over the window in which all of them
//! were streaming (from the first message of the last to start until the first last
//! message).

use std::io;

use std::time::Instant;

use shmkit::channel::{broadcast, mpsc, spsc, Receiver, Sender};
use shmkit::sync::wait::WaitStrategy;
use shmkit::Name;

use super::harness::{FINAL, PHASE_END};
use super::mech::{copy_exact, exact, Ctx, Link};
use super::shmkit_chan::ring_bytes;

pub struct Mpsc {
    end: End,
}

enum End {
    Sender(mpsc::Sender, Receiver),
    Receiver(mpsc::Receiver, Sender),
}

fn names(ctx: &Ctx) -> (Name, Name) {
    (Name::Posix(ctx.posix_name("mpsc")), Name::Posix(ctx.posix_name("rep")))
}

fn go_name(ctx: &Ctx) -> Name {
    Name::Posix(ctx.posix_name("go"))
}

fn seq_of(msg: &[u8]) -> u64 {
    u64::from_le_bytes(msg[..8].try_into().expect("messages are at least 8 bytes"))
}

/// What [`serve`] measured of the stream.
pub struct Served {
    /// Ping's streamed messages received, and numbering errors over all lanes.
    pub received: u64,
    pub errors: u64,
    /// The window in which every sender was streaming, and each sender's messages in
    /// it (ping's first).
    pub seconds: f64,
    pub counts: Vec<u64>,
}

/// Pong of a row with sources: echoes ping's round trips, lets the sources go, then
/// takes every sender's stream (see the module's documentation).
pub fn serve(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Served> {
    let (req, rep) = names(ctx);
    let senders = ctx.mech.sources() + 1;
    let capacity = ring_bytes(ctx.size);
    let config = mpsc::Config { senders: 4, capacity, ..mpsc::Config::default() };
    let mut rx = mpsc::Receiver::create(&req, &config).map_err(other)?;
    let mut tx = Sender::create(&rep, &spsc::Config { capacity, ..spsc::Config::default() })
        .map_err(other)?;
    let config = broadcast::Config { slots: 4, max_message: 8, ..broadcast::Config::default() };
    let mut go = broadcast::Publisher::create(&go_name(ctx), &config).map_err(other)?;
    ready("")?;

    let mut buf = vec![0u8; ctx.size];
    let take = |rx: &mut mpsc::Receiver, buf: &mut [u8]| -> io::Result<usize> {
        let g = rx.recv_ref().map_err(other)?;
        copy_exact(&g, buf)?;
        Ok(g.sender() as usize)
    };
    let ping = loop {
        let lane = take(&mut rx, &mut buf)?;
        tx.send(&buf).map_err(other)?;
        if seq_of(&buf) == PHASE_END {
            break lane;
        }
    };
    go.send(&[1]).map_err(other)?;

    let lanes = rx.shape().lanes as usize + 1; // sender records are 1..=N
    let mut next = vec![0u64; lanes];
    let (mut streaming, mut running, mut errors) = (0, senders, 0);
    let mut start = (Instant::now(), vec![0u64; lanes]);
    let mut window = None;
    while running > 0 {
        let lane = take(&mut rx, &mut buf)?;
        let seq = seq_of(&buf);
        if seq & !FINAL != next[lane] {
            errors += 1;
        }
        if next[lane] == 0 {
            streaming += 1;
            if streaming == senders {
                start = (Instant::now(), next.clone());
            }
        }
        next[lane] += 1;
        if seq & FINAL == 0 {
            continue;
        }
        running -= 1;
        if window.is_none() {
            window = Some(start.0.elapsed().as_secs_f64());
            for (base, n) in start.1.iter_mut().zip(&next) {
                *base = n - *base;
            }
        }
        if lane == ping {
            buf[..8].copy_from_slice(&next[lane].to_le_bytes());
            tx.send(&buf).map_err(other)?;
        }
    }
    // Ping's lane first, then the others in lane order.
    let mut order: Vec<usize> = (0..lanes).filter(|&l| l != ping && next[l] > 0).collect();
    order.insert(0, ping);
    Ok(Served {
        received: next[ping],
        errors,
        seconds: window.unwrap_or_default(),
        counts: order.iter().map(|&l| start.1[l]).collect(),
    })
}

/// A sender besides ping: joined, parked until pong says go.
pub struct Source {
    tx: mpsc::Sender,
    go: broadcast::Subscriber,
}

impl Source {
    pub fn join(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Source> {
        let (req, _) = names(ctx);
        let mut go = broadcast::Subscriber::open(&go_name(ctx)).map_err(other)?;
        // Parked, not spinning, while ping and pong time their round trips.
        go.set_wait_strategy(WaitStrategy::Block);
        let tx = mpsc::Sender::open(&req).map_err(other)?;
        ready("")?;
        Ok(Source { tx, go })
    }

    pub fn wait_for_go(&mut self) -> io::Result<()> {
        self.go.recv(&mut Vec::new()).map(drop).map_err(other)
    }

    pub fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.tx.send(msg).map_err(other)
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Link for Mpsc {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Mpsc> {
        let (req, rep) = names(ctx);
        let capacity = ring_bytes(ctx.size);
        let config = mpsc::Config { senders: 4, capacity, ..mpsc::Config::default() };
        let rx = mpsc::Receiver::create(&req, &config).map_err(other)?;
        let tx = Sender::create(&rep, &spsc::Config { capacity, ..spsc::Config::default() })
            .map_err(other)?;
        ready("")?;
        Ok(Mpsc { end: End::Receiver(rx, tx) })
    }

    fn ping(ctx: &Ctx, _rendezvous: &str) -> io::Result<Mpsc> {
        let (req, rep) = names(ctx);
        let tx = mpsc::Sender::open(&req).map_err(other)?;
        let rx = Receiver::open(&rep).map_err(other)?;
        Ok(Mpsc { end: End::Sender(tx, rx) })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match &mut self.end {
            End::Sender(tx, _) => tx.send(msg).map_err(other),
            End::Receiver(_, tx) => tx.send(msg).map_err(other),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match &mut self.end {
            End::Sender(_, rx) => exact(rx.recv_into(buf).map_err(other)?, buf.len()),
            End::Receiver(rx, _) => copy_exact(&rx.recv_ref().map_err(other)?, buf),
        }
    }
}
