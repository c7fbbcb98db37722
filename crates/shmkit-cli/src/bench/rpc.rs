//! shmkit's request/reply service: ping is a client whose `call` is a round trip; pong
//! is the server, echoing each request. No streaming row: every call waits for its
//! reply.

use std::io::{self, Write};
use std::time::Duration;

use shmkit::channel::rpc::{Client, Config, Server};
use shmkit::Name;

use super::harness::PHASE_END;
use super::mech::{invalid, Ctx, Link};

fn name(ctx: &Ctx) -> Name {
    Name::Posix(ctx.posix_name("rpc"))
}

fn capacity(size: usize) -> usize {
    (4 * (size + 64)).next_power_of_two().max(1 << 16)
}

/// The client side: `send` holds the request, `recv` makes the call.
pub struct Rpc {
    client: Client,
    request: Vec<u8>,
    reply: Vec<u8>,
}

impl Link for Rpc {
    const STREAMS: bool = false;

    fn pong(_ctx: &Ctx, _ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Rpc> {
        Err(invalid("the rpc server runs through `serve`"))
    }

    fn ping(ctx: &Ctx, _rendezvous: &str) -> io::Result<Rpc> {
        let client = Client::connect(&name(ctx)).map_err(io::Error::other)?;
        Ok(Rpc { client, request: Vec::new(), reply: Vec::new() })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.request.clear();
        self.request.extend_from_slice(msg);
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.client
            .call(&self.request, &mut self.reply, Duration::from_secs(10))
            .map_err(io::Error::other)?;
        if self.reply.len() != buf.len() {
            return Err(invalid(format!(
                "a {}-byte reply, expected {}",
                self.reply.len(),
                buf.len()
            )));
        }
        buf.copy_from_slice(&self.reply);
        Ok(())
    }
}

/// The pong role for rpc: serve echoes until the end-of-phase request.
pub fn serve(ctx: &Ctx, out: &mut impl Write) -> io::Result<()> {
    let config = Config { clients: 2, capacity: capacity(ctx.size), ..Config::default() };
    let mut server = Server::create(&name(ctx), &config).map_err(io::Error::other)?;
    writeln!(out, "ready")?;
    out.flush()?;
    let mut ended = false;
    while !ended {
        server.serve_for(Duration::from_millis(100), |req, reply| {
            reply.extend_from_slice(req);
            ended |= req.len() >= 8 && req[..8] == PHASE_END.to_le_bytes();
        });
    }
    writeln!(out, "done 0 0 {}", shmkit::sync::wait::current_cpu())
}
