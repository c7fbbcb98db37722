//! iceoryx2 (0.10), the leading peer, in the same harness (cargo feature `peers`): a
//! publish-subscribe service each way (`TAG/req`, `TAG/rep`), `[u8]` payloads loaned
//! and written in place, no history, no overflow (the publisher retries until the
//! subscriber's queue has room, so streaming loses nothing, as shmkit's rows). Two
//! ways to wait: `iceoryx2-spin` polls `receive()` (the benchmark iceoryx2 publishes
//! itself), `iceoryx2-event` pairs each service with an event service and sleeps on a
//! listener when there is nothing to receive (the sender notifies after each send).

use std::io;

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use super::mech::{copy_exact, Ctx, Link, Mech};
use super::shmkit_chan::ring_bytes;

pub struct Iceoryx {
    tx: Publisher<ipc::Service, [u8], ()>,
    rx: Subscriber<ipc::Service, [u8], ()>,
    /// Event-driven rows: our notifier on the peer's event service, our listener.
    event: Option<(Notifier<ipc::Service>, Listener<ipc::Service>)>,
    // Last: the ports above go before their node.
    _node: Node<ipc::Service>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Iceoryx {
    /// `ours`: the service we publish on; `theirs`: the one we subscribe to.
    fn new(ctx: &Ctx, ours: &str, theirs: &str) -> io::Result<Iceoryx> {
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(other)?;
        // Queue depth: as many messages as the shmkit rows' ring holds, within reason.
        let depth = (ring_bytes(ctx.size) / ctx.size.max(1)).clamp(4, 1024);
        let service = |name: &str| {
            let name: ServiceName =
                format!("{}/{name}", ctx.tag).as_str().try_into().map_err(other)?;
            node.service_builder(&name)
                .publish_subscribe::<[u8]>()
                .max_publishers(1)
                .max_subscribers(1)
                .history_size(0)
                .subscriber_max_buffer_size(depth)
                .enable_safe_overflow(false)
                .open_or_create()
                .map_err(other)
        };
        let (out, inp) = (service(ours)?, service(theirs)?);
        let tx = out
            .publisher_builder()
            .initial_max_slice_len(ctx.size)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(other)?;
        let rx = inp.subscriber_builder().create().map_err(other)?;
        let event = if ctx.mech == Mech::Iceoryx2Event {
            let event = |name: &str| {
                let name: ServiceName =
                    format!("{}/{name}.ev", ctx.tag).as_str().try_into().map_err(other)?;
                node.service_builder(&name).event().open_or_create().map_err(other)
            };
            let (theirs_ev, ours_ev) = (event(ours)?, event(theirs)?);
            Some((
                theirs_ev.notifier_builder().create().map_err(other)?,
                ours_ev.listener_builder().create().map_err(other)?,
            ))
        } else {
            None
        };
        Ok(Iceoryx { tx, rx, event, _node: node })
    }
}

impl Link for Iceoryx {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Iceoryx> {
        let link = Iceoryx::new(ctx, "rep", "req")?;
        ready("")?;
        Ok(link)
    }

    fn ping(ctx: &Ctx, _rendezvous: &str) -> io::Result<Iceoryx> {
        Iceoryx::new(ctx, "req", "rep")
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let sample = self.tx.loan_slice_uninit(msg.len()).map_err(other)?;
        sample.write_from_slice(msg).send().map_err(other)?;
        if let Some((notifier, _)) = &self.event {
            notifier.notify().map_err(other)?;
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        loop {
            if let Some(sample) = self.rx.receive().map_err(other)? {
                return copy_exact(sample.payload(), buf);
            }
            match &self.event {
                // Notifications are counted: one sent before this wait ends it at once.
                Some((_, listener)) => {
                    listener.blocking_wait(|_| {}).map_err(other)?;
                }
                None => std::hint::spin_loop(),
            }
        }
    }
}
