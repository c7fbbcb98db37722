//! A spinning mailbox in a MAP_SHARED mapping of a regular file in the run's directory
//! (pong sizes the file before either side maps it, so no side can touch a page past
//! its end and take SIGBUS, the start-up race ipc-bench's mmap test has).

use std::io;

use super::mech::Ctx;
use super::slot::{spin_until, Backing, Doorbell};

pub struct FileSpin;

impl Doorbell for FileSpin {
    const BACKING: Backing = Backing::File;
    const RINGS: bool = false;

    fn new(_ctx: &Ctx, _pong: bool) -> io::Result<FileSpin> {
        Ok(FileSpin)
    }

    fn ring(&self, _peer_pid: u32) -> io::Result<()> {
        Ok(())
    }

    fn wait(&self, ready: impl FnMut() -> bool) -> io::Result<()> {
        spin_until(ready);
        Ok(())
    }
}
