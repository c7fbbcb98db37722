//! A pair of anonymous pipes. The orchestrator creates them ([`prepare`]); each peer
//! inherits the two ends it uses: `fds[0]` to read, `fds[1]` to write.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::mech::{Ctx, Link};
use super::sys::{cvt, inherit_file};
use super::Prepared;

pub struct Pipe {
    rx: File,
    tx: File,
}

/// `pipe2(O_CLOEXEC)` twice: ping → pong and pong → ping.
pub fn prepare() -> io::Result<Prepared> {
    let [req_r, req_w] = pipe()?;
    let [rep_r, rep_w] = pipe()?;
    Ok(Prepared {
        ping: vec![rep_r.as_raw_fd(), req_w.as_raw_fd()],
        pong: vec![req_r.as_raw_fd(), rep_w.as_raw_fd()],
        _owned: vec![req_r, req_w, rep_r, rep_w],
    })
}

fn pipe() -> io::Result<[OwnedFd; 2]> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }))
}

impl Pipe {
    fn inherit(ctx: &Ctx) -> io::Result<Pipe> {
        Ok(Pipe { rx: inherit_file(ctx.fd(0)?)?, tx: inherit_file(ctx.fd(1)?)? })
    }
}

impl Link for Pipe {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Pipe> {
        let pipe = Pipe::inherit(ctx)?;
        ready("")?;
        Ok(pipe)
    }

    fn ping(ctx: &Ctx, _rendezvous: &str) -> io::Result<Pipe> {
        Pipe::inherit(ctx)
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.tx.write_all(msg)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.rx.read_exact(buf)
    }
}
