//! AF_UNIX sockets: a stream socket, and the two message-preserving kinds (seqpacket
//! through listen/accept, datagram with a bound socket on each side).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use super::mech::{exact, invalid, Ctx, Link, Mech};
use super::sys::{bind, connect, cvt, retry, unix_socket};

pub struct Stream(UnixStream);

impl Link for Stream {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Stream> {
        let listener = UnixListener::bind(ctx.path("sock"))?;
        ready("")?;
        Ok(Stream(listener.accept()?.0))
    }

    fn ping(ctx: &Ctx, _rendezvous: &str) -> io::Result<Stream> {
        Ok(Stream(UnixStream::connect(ctx.path("sock"))?))
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.0.write_all(msg)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact(buf)
    }
}

/// A seqpacket or datagram socket: one `send` per message, and a receive that must
/// return exactly one whole message.
pub struct Packet {
    fd: OwnedFd,
    /// Datagram pong: connects to the ping socket once the first message proves it is
    /// bound.
    connect_to: Option<std::path::PathBuf>,
}

impl Link for Packet {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Packet> {
        if ctx.mech == Mech::UnixSeqpacket {
            let listener = unix_socket(libc::SOCK_SEQPACKET)?;
            bind(listener.as_raw_fd(), &ctx.path("sock"))?;
            // SAFETY: listen takes no pointers.
            cvt(unsafe { libc::listen(listener.as_raw_fd(), 1) })?;
            ready("")?;
            // SAFETY: null address pointers are allowed: the peer address is not wanted.
            let fd = cvt(unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            })?;
            // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
            return Ok(Packet { fd: unsafe { OwnedFd::from_raw_fd(fd) }, connect_to: None });
        }
        let fd = unix_socket(libc::SOCK_DGRAM)?;
        bind(fd.as_raw_fd(), &ctx.path("pong"))?;
        ready("")?;
        Ok(Packet { fd, connect_to: Some(ctx.path("ping")) })
    }

    fn ping(ctx: &Ctx, _rendezvous: &str) -> io::Result<Packet> {
        if ctx.mech == Mech::UnixSeqpacket {
            let fd = unix_socket(libc::SOCK_SEQPACKET)?;
            connect(fd.as_raw_fd(), &ctx.path("sock"))?;
            return Ok(Packet { fd, connect_to: None });
        }
        let fd = unix_socket(libc::SOCK_DGRAM)?;
        bind(fd.as_raw_fd(), &ctx.path("ping"))?;
        connect(fd.as_raw_fd(), &ctx.path("pong"))?;
        Ok(Packet { fd, connect_to: None })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: `msg` is valid for reads of its length.
        let n = retry(|| unsafe {
            libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0)
        })?;
        if n != msg.len() {
            return Err(invalid(format!("sent {n} of {} bytes", msg.len())));
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        // SAFETY: `buf` is valid for writes of its length; MSG_TRUNC makes the call
        // return the datagram's real length without writing past `buf`.
        let n = retry(|| unsafe {
            libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC)
        })?;
        exact(n, buf.len())?;
        if let Some(path) = self.connect_to.take() {
            connect(self.fd.as_raw_fd(), &path)?;
        }
        Ok(())
    }
}
