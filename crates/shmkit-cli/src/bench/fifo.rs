//! A pair of named pipes in the run's directory. Both sides open `req` first, then
//! `rep`, so the blocking FIFO opens pair up instead of deadlocking.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};

use super::mech::{Ctx, Link};
use super::sys::mkfifo;

pub struct Fifo {
    rx: File,
    tx: File,
}

impl Link for Fifo {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Fifo> {
        mkfifo(&ctx.path("req"))?;
        mkfifo(&ctx.path("rep"))?;
        ready("")?;
        let rx = File::open(ctx.path("req"))?;
        let tx = OpenOptions::new().write(true).open(ctx.path("rep"))?;
        Ok(Fifo { rx, tx })
    }

    fn ping(ctx: &Ctx, _rendezvous: &str) -> io::Result<Fifo> {
        let tx = OpenOptions::new().write(true).open(ctx.path("req"))?;
        let rx = File::open(ctx.path("rep"))?;
        Ok(Fifo { rx, tx })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.tx.write_all(msg)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.rx.read_exact(buf)
    }
}
