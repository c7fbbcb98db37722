//! Anonymous shared memory: `memfd_create`, seals, and passing the descriptor over a
//! unix socket with `SCM_RIGHTS`.
//!
//! A memfd has no name, so no other process can open it by accident or by malice; it is
//! handed over explicitly. Once sized it is sealed with
//! `F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL`: no holder can truncate it under a peer's
//! mapping (the SIGBUS hazard of other kinds), and no one can remove the seals.
//!
//! # References
//!  - [`memfd_create(2)`](https://man7.org/linux/man-pages/man2/memfd_create.2.html)
//!  - [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html) (file seals)
//!  - [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html) (`SCM_RIGHTS`)

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::{map_fd, Backing, Segment};
use crate::error::{Error, Result};

/// The seals every shmkit memfd carries once sized.
pub const SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW).union(SealFlags::SEAL);

/// `memfd_create(name, MFD_CLOEXEC|MFD_ALLOW_SEALING)` + `ftruncate` + seals + `mmap`.
pub(crate) fn create(debug_name: &str, size: usize) -> Result<Segment> {
    let what = format!("{debug_name:?}");
    let fd = rustix::fs::memfd_create(debug_name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(|e| Error::errno("memfd_create", &what, e))?;
    super::posix::allocate(&fd, size as u64, debug_name)?;
    rustix::fs::fcntl_add_seals(&fd, SEALS)
        .map_err(|e| Error::errno("fcntl(F_ADD_SEALS)", &what, e))?;
    let base = map_fd(&fd, size, false, None, &what)?;
    Ok(Segment::from_parts(base, size, Backing::Memfd { fd }, false, false))
}

/// Sends `fd` and `size` (8 bytes, native endian) in one message.
pub(crate) fn send_fd(socket: &impl AsFd, fd: &OwnedFd, size: u64) -> Result<()> {
    let bytes = size.to_ne_bytes();
    let fds = [fd.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Error::corrupt("SCM_RIGHTS control buffer too small"));
    }
    let n =
        rustix::net::sendmsg(socket, &[IoSlice::new(&bytes)], &mut control, SendFlags::NOSIGNAL)
            .map_err(|e| Error::errno("sendmsg", "SCM_RIGHTS memfd", e))?;
    if n != bytes.len() {
        return Err(Error::corrupt(format!("sendmsg sent {n} of {} bytes", bytes.len())));
    }
    Ok(())
}

/// Receives one descriptor and its size, then checks it before mapping.
pub(crate) fn recv(socket: &impl AsFd) -> Result<Segment> {
    let mut bytes = [0u8; 8];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut bytes)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| Error::errno("recvmsg", "SCM_RIGHTS memfd", e))?;
    let mut received: Option<OwnedFd> = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                // Keep the first descriptor; any extra ones are closed as they drop.
                received.get_or_insert(fd);
            }
        }
    }
    let fd = received.ok_or_else(|| Error::corrupt("the message carried no file descriptor"))?;
    if msg.bytes != bytes.len() {
        return Err(Error::corrupt(format!("size message is {} bytes, expected 8", msg.bytes)));
    }
    let size = u64::from_ne_bytes(bytes);
    let seals = rustix::fs::fcntl_get_seals(&fd)
        .map_err(|e| Error::errno("fcntl(F_GET_SEALS)", "received fd", e))?;
    if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
        return Err(Error::incompatible("memfd seals", format!("{seals:?}"), format!("{SEALS:?}")));
    }
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::errno("fstat", "received memfd", e))?;
    if st.st_size as u64 != size {
        return Err(Error::incompatible("memfd size", st.st_size, size));
    }
    let len = super::checked_len(st.st_size, "received memfd")?;
    let base = map_fd(&fd, len, false, None, "received memfd")?;
    Ok(Segment::from_parts(base, len, Backing::Memfd { fd }, false, false))
}

/// The seals on a segment's memfd (for tests and `info`).
pub fn seals(seg: &Segment) -> Option<SealFlags> {
    match &seg.backing {
        Backing::Memfd { fd } => rustix::fs::fcntl_get_seals(fd).ok(),
        _ => None,
    }
}

/// The segment's descriptor (memfd, POSIX or file), e.g. to try to shrink it in a test.
pub fn fd(seg: &Segment) -> Option<std::os::fd::BorrowedFd<'_>> {
    match &seg.backing {
        Backing::Memfd { fd } | Backing::Posix { fd, .. } | Backing::File { fd, .. } => {
            Some(fd.as_fd())
        }
        Backing::SysV { .. } => None,
    }
}
