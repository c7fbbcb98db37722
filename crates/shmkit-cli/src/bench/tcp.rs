//! TCP over the loopback interface, Nagle off. Pong listens on an ephemeral port and
//! passes the port as the rendezvous; `read_exact` absorbs partial reads (a 1 MiB
//! message arrives in many segments).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};

use super::mech::{invalid, Ctx, Link};

pub struct Tcp(TcpStream);

impl Link for Tcp {
    fn pong(_ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Tcp> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        ready(&listener.local_addr()?.port().to_string())?;
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        Ok(Tcp(s))
    }

    fn ping(_ctx: &Ctx, rendezvous: &str) -> io::Result<Tcp> {
        let port: u16 = rendezvous.parse().map_err(|_| invalid("bad port"))?;
        let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        s.set_nodelay(true)?;
        Ok(Tcp(s))
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.0.write_all(msg)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact(buf)
    }
}
