//! ipc-bench's shared-memory method: the payload in a System V segment and a flag the
//! receiver spins on ([`slot`](super::slot) holds the mailbox).

use std::io;

use super::mech::Ctx;
use super::slot::{spin_until, Backing, Doorbell};

pub struct Spin;

impl Doorbell for Spin {
    const BACKING: Backing = Backing::SysV;
    const RINGS: bool = false;

    fn new(_ctx: &Ctx, _pong: bool) -> io::Result<Spin> {
        Ok(Spin)
    }

    fn ring(&self, _peer_pid: u32) -> io::Result<()> {
        Ok(())
    }

    fn wait(&self, ready: impl FnMut() -> bool) -> io::Result<()> {
        spin_until(ready);
        Ok(())
    }
}
