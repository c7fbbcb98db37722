//! Payload in POSIX shared memory, every message announced by writing the peer's
//! eventfd; a waiting side blocks in `read` on its own. The orchestrator creates both
//! eventfds ([`prepare`]); each peer inherits `[mine, peer's]`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::mech::Ctx;
use super::slot::{Backing, Doorbell};
use super::sys::{cvt, inherit_file};
use super::Prepared;

pub struct Eventfd {
    mine: File,
    peer: File,
}

pub fn prepare() -> io::Result<Prepared> {
    let make = || -> io::Result<OwnedFd> {
        // SAFETY: eventfd takes no pointers.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let (ping, pong) = (make()?, make()?);
    Ok(Prepared {
        ping: vec![ping.as_raw_fd(), pong.as_raw_fd()],
        pong: vec![pong.as_raw_fd(), ping.as_raw_fd()],
        _owned: vec![ping, pong],
    })
}

impl Doorbell for Eventfd {
    const BACKING: Backing = Backing::Posix;
    const RINGS: bool = true;

    fn new(ctx: &Ctx, _pong: bool) -> io::Result<Eventfd> {
        Ok(Eventfd { mine: inherit_file(ctx.fd(0)?)?, peer: inherit_file(ctx.fd(1)?)? })
    }

    fn ring(&self, _peer_pid: u32) -> io::Result<()> {
        (&self.peer).write_all(&1u64.to_ne_bytes())
    }

    fn wait(&self, mut ready: impl FnMut() -> bool) -> io::Result<()> {
        let mut count = [0u8; 8];
        while !ready() {
            (&self.mine).read_exact(&mut count)?;
        }
        Ok(())
    }
}
