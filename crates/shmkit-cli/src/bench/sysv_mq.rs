//! System V message queues, one per direction, created `IPC_PRIVATE` by pong; their ids
//! are the rendezvous (`REQ,REP`) and the orchestrator removes them after the row.

use std::io;

use super::mech::{invalid, Ctx, Link};
use super::sys::{cvt, retry};

pub struct SysvMq {
    rx: i32,
    tx: i32,
    /// `struct msgbuf`: an 8-byte `mtype`, then the text. msgsnd has no iovec form, so
    /// every message is copied in here first.
    buf: Vec<u8>,
}

/// Parses the rendezvous `REQ,REP`.
pub fn ids(rendezvous: &str) -> Option<(i32, i32)> {
    let (a, b) = rendezvous.split_once(',')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `msgctl(id, IPC_RMID)` for both queues of a row.
pub fn remove(rendezvous: &str) {
    if let Some((a, b)) = ids(rendezvous) {
        for id in [a, b] {
            // SAFETY: IPC_RMID takes no buffer.
            unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
}

fn create() -> io::Result<i32> {
    // SAFETY: msgget takes no pointers.
    cvt(unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) })
}

impl SysvMq {
    fn new(rx: i32, tx: i32, size: usize) -> SysvMq {
        let mut buf = vec![0u8; 8 + size];
        buf[..8].copy_from_slice(&1i64.to_ne_bytes()); // mtype must be positive
        SysvMq { rx, tx, buf }
    }
}

impl Link for SysvMq {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<SysvMq> {
        let req = create()?;
        let rep = create();
        let rep = rep.inspect_err(|_| remove(&format!("{req},{req}")))?;
        ready(&format!("{req},{rep}"))?;
        Ok(SysvMq::new(req, rep, ctx.size))
    }

    fn ping(ctx: &Ctx, rendezvous: &str) -> io::Result<SysvMq> {
        let (req, rep) = ids(rendezvous).ok_or_else(|| invalid("bad queue ids"))?;
        Ok(SysvMq::new(rep, req, ctx.size))
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.buf[8..].copy_from_slice(msg);
        // SAFETY: `buf` holds an mtype followed by msg.len() bytes of text.
        retry(|| unsafe { libc::msgsnd(self.tx, self.buf.as_ptr().cast(), msg.len(), 0) } as isize)
            .map(drop)
    }

    fn recv(&mut self, out: &mut [u8]) -> io::Result<()> {
        let size = self.buf.len() - 8;
        // SAFETY: `buf` has room for an mtype and `size` bytes of text.
        let n =
            retry(|| unsafe { libc::msgrcv(self.rx, self.buf.as_mut_ptr().cast(), size, 0, 0) })?;
        if n != out.len() {
            return Err(invalid(format!("received a {n}-byte message, expected {}", out.len())));
        }
        out.copy_from_slice(&self.buf[8..8 + n]);
        Ok(())
    }
}
