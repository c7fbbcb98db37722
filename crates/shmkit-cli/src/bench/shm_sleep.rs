//! The seed article's method: the payload in a System V segment and a flag polled with
//! 2 µs sleeps in between (what `shmkit demo server --wait sleep` does).

use std::io;
use std::time::Duration;

use super::mech::Ctx;
use super::slot::{Backing, Doorbell};

pub struct SleepPoll;

impl Doorbell for SleepPoll {
    const BACKING: Backing = Backing::SysV;
    const RINGS: bool = false;

    fn new(_ctx: &Ctx, _pong: bool) -> io::Result<SleepPoll> {
        Ok(SleepPoll)
    }

    fn ring(&self, _peer_pid: u32) -> io::Result<()> {
        Ok(())
    }

    fn wait(&self, mut ready: impl FnMut() -> bool) -> io::Result<()> {
        while !ready() {
            std::thread::sleep(Duration::from_micros(2));
        }
        Ok(())
    }
}
