//! Payload in POSIX shared memory, every message announced by writing the peer's
//! eventfd; a waiting side blocks in `read` on its own ([`Eventfd`]), or in
//! `epoll_wait` on it as an event loop does, then reads it ([`EventfdEpoll`], the floor
//! of the async rows). The orchestrator creates both eventfds ([`prepare`]); each peer
//! inherits `[mine, peer's]`.

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

/// [`Eventfd`] waited on through epoll: `epoll_wait` until the eventfd is readable,
/// then `read` it, the least an event loop does per wake-up.
pub struct EventfdEpoll {
    fds: Eventfd,
    epoll: OwnedFd,
}

impl Doorbell for EventfdEpoll {
    const BACKING: Backing = Backing::Posix;
    const RINGS: bool = true;

    fn new(ctx: &Ctx, pong: bool) -> io::Result<EventfdEpoll> {
        let fds = Eventfd::new(ctx, pong)?;
        // SAFETY: epoll_create1 takes no pointers.
        let epoll = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `epoll` was just created and is owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0 };
        // SAFETY: both fds are open; `event` is a valid epoll_event.
        cvt(unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fds.mine.as_raw_fd(),
                &mut event,
            )
        })?;
        Ok(EventfdEpoll { fds, epoll })
    }

    fn ring(&self, peer_pid: u32) -> io::Result<()> {
        self.fds.ring(peer_pid)
    }

    fn wait(&self, mut ready: impl FnMut() -> bool) -> io::Result<()> {
        let mut count = [0u8; 8];
        while !ready() {
            let mut event = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: room for one event; the epoll fd is open.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut event, 1, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            (&self.fds.mine).read_exact(&mut count)?;
        }
        Ok(())
    }
}
