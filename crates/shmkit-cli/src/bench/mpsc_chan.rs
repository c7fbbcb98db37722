//! shmkit's MPSC channel with one sender: ping joins pong's MPSC channel as a sender
//! and takes the replies from an SPSC channel pong creates. The same messages and ring
//! bytes as the SPSC rows, so `shmkit-mpsc-1` against `shmkit-adaptive` is what a lane
//! (and the receiver's look over the lanes in use) costs.

use std::io;

use shmkit::channel::{mpsc, spsc, Receiver, Sender};
use shmkit::Name;

use super::mech::{invalid, Ctx, Link};
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
        let n = match &mut self.end {
            End::Sender(_, rx) => rx.recv_into(buf).map_err(other)?,
            End::Receiver(rx, _) => {
                let g = rx.recv_ref().map_err(other)?;
                let n = g.len().min(buf.len());
                buf[..n].copy_from_slice(&g[..n]);
                g.len()
            }
        };
        if n != buf.len() {
            return Err(invalid(format!("received a {n}-byte message, expected {}", buf.len())));
        }
        Ok(())
    }
}
