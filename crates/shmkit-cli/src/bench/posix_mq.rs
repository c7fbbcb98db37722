//! POSIX message queues, one per direction, created by pong with room for 10 messages
//! (the unprivileged default of /proc/sys/fs/mqueue/msg_max).

use std::ffi::CString;
use std::io;

use super::mech::{exact, Ctx, Link};
use super::sys::{cvt, retry};

pub struct PosixMq {
    rx: libc::mqd_t,
    tx: libc::mqd_t,
}

/// The queue names of a row, for pong to create and the orchestrator to unlink.
pub fn names(ctx: &Ctx) -> [CString; 2] {
    ["req", "rep"].map(|s| CString::new(ctx.posix_name(s)).expect("tags contain no NUL"))
}

/// `mq_unlink(name)` for both queues of a row; missing ones are fine.
pub fn unlink(ctx: &Ctx) {
    for name in names(ctx) {
        // SAFETY: `name` is NUL-terminated.
        unsafe { libc::mq_unlink(name.as_ptr()) };
    }
}

fn open(name: &CString, create: Option<usize>) -> io::Result<libc::mqd_t> {
    let q = match create {
        Some(size) => {
            // SAFETY: mq_attr is plain data; all-zero is valid.
            let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
            attr.mq_maxmsg = 10;
            attr.mq_msgsize = size as libc::c_long;
            // SAFETY: `name` is NUL-terminated and `attr` outlives the call.
            unsafe {
                libc::mq_open(
                    name.as_ptr(),
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o600 as libc::mode_t,
                    &attr as *const libc::mq_attr,
                )
            }
        }
        // SAFETY: `name` is NUL-terminated.
        None => unsafe { libc::mq_open(name.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) },
    };
    cvt(q)
}

impl Link for PosixMq {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<PosixMq> {
        let [req, rep] = names(ctx);
        let link = PosixMq { rx: open(&req, Some(ctx.size))?, tx: open(&rep, Some(ctx.size))? };
        ready("")?;
        Ok(link)
    }

    fn ping(ctx: &Ctx, _rendezvous: &str) -> io::Result<PosixMq> {
        let [req, rep] = names(ctx);
        Ok(PosixMq { rx: open(&rep, None)?, tx: open(&req, None)? })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: `msg` is valid for reads of its length.
        retry(|| unsafe { libc::mq_send(self.tx, msg.as_ptr().cast(), msg.len(), 0) } as isize)
            .map(drop)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        // SAFETY: `buf` is valid for writes of its length, which is the queue's
        // message size (mq_receive refuses smaller buffers).
        let n = retry(|| unsafe {
            libc::mq_receive(self.rx, buf.as_mut_ptr().cast(), buf.len(), std::ptr::null_mut())
        })?;
        exact(n, buf.len())
    }
}

impl Drop for PosixMq {
    fn drop(&mut self) {
        // SAFETY: both descriptors are open and owned by this link.
        unsafe {
            libc::mq_close(self.rx);
            libc::mq_close(self.tx);
        }
    }
}
