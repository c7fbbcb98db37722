//! Payload in POSIX shared memory, every message announced with `kill(peer, SIGUSR1)`
//! (ipc-bench's signal method). Both sides block SIGUSR1 before the peer can learn
//! their pid and take it with `sigwaitinfo`, so no handler runs and no signal is lost:
//! a pending signal makes the next wait return at once, and every wait first looks at
//! the mailbox.

use std::io;

use super::mech::{invalid, Ctx};
use super::slot::{Backing, Doorbell};
use super::sys::cvt;

pub struct Signal {
    set: libc::sigset_t,
}

impl Doorbell for Signal {
    const BACKING: Backing = Backing::Posix;
    const RINGS: bool = true;

    fn new(_ctx: &Ctx, _pong: bool) -> io::Result<Signal> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; pthread_sigmask reads it.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            let e = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if e != 0 {
                return Err(io::Error::from_raw_os_error(e));
            }
        }
        Ok(Signal { set })
    }

    fn ring(&self, peer_pid: u32) -> io::Result<()> {
        if peer_pid == 0 {
            return Err(invalid("the peer has not recorded its pid"));
        }
        // SAFETY: kill takes no pointers.
        cvt(unsafe { libc::kill(peer_pid as libc::pid_t, libc::SIGUSR1) }).map(drop)
    }

    fn wait(&self, mut ready: impl FnMut() -> bool) -> io::Result<()> {
        while !ready() {
            // SAFETY: `set` is a valid sigset_t; the siginfo pointer may be null.
            let r = unsafe { libc::sigwaitinfo(&self.set, std::ptr::null_mut()) };
            if r == -1 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
