//! `--import KEY=LOCAL`: every Zenoh sample on `KEY` is published, in order, on a local
//! broadcast channel, created if absent (with the shape given on the command line, or
//! else the one the exporter describes).
//!
//! Each sample's attachment ([`crate::wire`]) names its stream and number. A number
//! past the next expected one means samples were lost on the way (congestion control
//! *drop*, a bridge restarted): the gap is published as a loss report, which local
//! subscribers receive as `Lagged { missed }`. A number already published is a
//! duplicate and dropped. The stream and number of the last message published are kept
//! in the channel itself (the publisher's two user words), so a bridge restarted after a
//! crash takes the channel over and reports the gap since its predecessor's last
//! message: subscribers never see a message twice or torn.

use std::time::Duration;

use shmkit::channel::broadcast::{self, Overflow, Publisher};
use shmkit::typed::TypeTag;
use shmkit::{Error, Name, Options, Segment};
use zenoh::Session;

use crate::wire::{self, Attachment, Export};
use crate::{log, Shared};

/// One `--import`.
#[derive(Debug, Clone)]
pub struct Spec {
    pub key: String,
    pub local: Name,
}

/// The shape of a channel an import creates, as far as the command line gives it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    pub slots: Option<u64>,
    pub max_message: Option<u64>,
    pub overflow: Option<Overflow>,
    pub subscribers: u32,
    pub mode: u32,
}

/// Runs one import until the bridge stops; an error ends this import only.
pub async fn run(session: Session, spec: Spec, shared: std::sync::Arc<Shared>) {
    if let Err(e) = serve(&session, &spec, &shared).await {
        log(format!("import {}: {e}; this import stops, the others go on", spec.key));
    }
}

/// What an exporter says about `key`, if one answers within `timeout`.
pub async fn describe(session: &Session, key: &str, timeout: Duration) -> Option<Export> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(replies) = session.get(wire::meta_key(key)).timeout(timeout).await {
            while let Ok(reply) = replies.recv_async().await {
                if let Ok(sample) = reply.result() {
                    let bytes = sample.payload().to_bytes();
                    if let Ok(export) = serde_json::from_slice::<Export>(&bytes) {
                        return Some(export);
                    }
                }
            }
        }
        // No exporter reachable yet: the peers may still be connecting.
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn type_name(t: Option<TypeTag>) -> String {
    t.map_or("untyped messages".into(), |t| t.to_string())
}

/// Opens the local channel as its publisher (taking over from a dead one), or creates
/// it. Returns the publisher and whether this bridge created the channel.
fn open_or_create(
    spec: &Spec,
    shape: &Shape,
    described: Option<&Export>,
) -> Result<(Publisher, bool), String> {
    match Segment::open(&spec.local, &Options::default()) {
        Ok(seg) => {
            let p = Publisher::from_segment(seg).map_err(|e| match e {
                Error::Busy { pid, .. } => format!(
                    "{} already has a live publisher (pid {pid}): one import per channel",
                    spec.local
                ),
                e => format!("cannot publish on {}: {e}", spec.local),
            })?;
            return Ok((p, false));
        }
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(format!("cannot open {}: {e}", spec.local)),
    }
    let lossless = described.is_none_or(|d| d.overflow != Overflow::Overwrite.to_string());
    let config = broadcast::Config {
        slots: shape.slots.or(described.and_then(|d| d.slots)).unwrap_or(1024) as usize,
        max_message: shape.max_message.or(described.map(|d| d.max_message)).unwrap_or(1008)
            as usize,
        subscribers: shape.subscribers,
        overflow: shape.overflow.unwrap_or(if lossless {
            Overflow::Backpressure
        } else {
            Overflow::Overwrite
        }),
        mode: shape.mode,
        group: None,
        message_type: described.and_then(|d| d.message_type).map(Into::into),
    };
    match Publisher::create(&spec.local, &config) {
        Ok(p) => Ok((p, true)),
        // Made by someone else meanwhile: publish on theirs.
        Err(Error::AlreadyExists { .. }) => open_or_create(spec, shape, described),
        Err(e) => Err(format!("cannot create {}: {e}", spec.local)),
    }
}

async fn serve(session: &Session, spec: &Spec, shared: &Shared) -> Result<(), String> {
    // The shape of a channel to create comes from the command line or the exporter:
    // without either, wait for an exporter to describe it.
    let must_describe = shared.shape.max_message.is_none() && !exists(&spec.local);
    let mut described = describe(session, &spec.key, shared.describe_timeout).await;
    if described.is_none() && must_describe {
        log(format!(
            "import {}: waiting for an exporter of {} to describe it (or give --max-msg)",
            spec.key, spec.key
        ));
        while described.is_none() {
            described = describe(session, &spec.key, shared.describe_timeout).await;
        }
    }
    let (publisher, created) = open_or_create(spec, &shared.shape, described.as_ref())?;
    let local_type = TypeTag::from_params(&layout_params(&publisher));
    if let Some(d) = &described {
        let remote_type = d.message_type.map(TypeTag::from);
        if remote_type != local_type {
            return Err(format!(
                "type mismatch: {} carries {} ({} on {}), {} carries {}: refused",
                spec.key,
                type_name(remote_type),
                d.local,
                d.host,
                spec.local,
                type_name(local_type)
            ));
        }
    }
    let geo = publisher.geometry();
    let mut publisher = publisher;
    publisher.set_wait_strategy(shared.wait);
    let [last_source, last_seq] = publisher.user_words();
    let relay = Relay {
        key: spec.key.clone(),
        local: spec.local.to_string(),
        publisher,
        local_type,
        max_message: geo.max_message,
        last_source,
        last_seq,
        said: Said::default(),
    };
    let relay = std::sync::Mutex::new(relay);
    let (failed, mut failure) = tokio::sync::mpsc::unbounded_channel();
    let subscriber = session
        .declare_subscriber(spec.key.clone())
        // Each sample is published from Zenoh's receiving thread as it arrives: no
        // queue, no hand-over to another thread. A publish that waits (backpressure)
        // holds that thread, which holds the link: with congestion control *block* at
        // the exporter, backpressure reaches the remote publisher.
        .callback(move |sample| {
            let mut relay = relay.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = relay.take(&sample) {
                let _ = failed.send(e);
            }
        })
        .await
        .map_err(|e| format!("zenoh: {e}"))?;
    log(format!(
        "import {}: {} -> {} ({} slots x {} B, {}{})",
        spec.key,
        spec.key,
        spec.local,
        geo.slots,
        geo.max_message,
        geo.overflow,
        if created { ", created" } else { "" }
    ));
    let why = failure.recv().await.unwrap_or_else(|| "the subscriber went away".into());
    drop(subscriber);
    Err(why)
}

/// The state of one import's data path, driven by Zenoh's callback.
struct Relay {
    key: String,
    local: String,
    publisher: Publisher,
    local_type: Option<TypeTag>,
    max_message: u64,
    /// The stream and number of the last message published (also in the channel's
    /// user words, for a successor).
    last_source: u64,
    last_seq: u64,
    said: Said,
}

impl Relay {
    /// Publishes one sample (or the loss before it); `Err` ends the import.
    fn take(&mut self, sample: &zenoh::sample::Sample) -> Result<(), String> {
        let att = sample.attachment().and_then(|a| Attachment::decode(&a.to_bytes()));
        let (key, local) = (&self.key, &self.local);
        let Some(att) = att else {
            once(&mut self.said.foreign, || {
                format!("import {key}: samples without a shmkit attachment are dropped")
            });
            return Ok(());
        };
        if att.message_type != self.local_type {
            let ours = self.local_type;
            once(&mut self.said.mismatch, || {
                format!(
                    "import {key}: refused: the stream carries {}, {local} carries {}",
                    type_name(att.message_type),
                    type_name(ours)
                )
            });
            return Ok(());
        }
        if att.source == self.last_source {
            if att.seq <= self.last_seq {
                return Ok(()); // published already
            }
            let missed = att.seq - self.last_seq - 1;
            if missed > 0 {
                self.publisher.report_lost(missed).map_err(|e| format!("{}: {e}", self.local))?;
            }
        }
        // A large message comes in fragments (Zenoh's batches are 64 KiB): they are
        // copied straight into the slot, not joined first.
        let payload = sample.payload();
        if payload.len() as u64 > self.max_message {
            let (key, len, local, max) = (&self.key, payload.len(), &self.local, self.max_message);
            once(&mut self.said.too_large, || {
                format!(
                    "import {key}: a {len} B message exceeds {local}'s {max} B: reported as lost"
                )
            });
            self.publisher.report_lost(1).map_err(|e| format!("{}: {e}", self.local))?;
        } else {
            let mut slices = payload.slices();
            let sent = match (slices.next(), slices.next()) {
                (None, _) => self.publisher.send(&[]).map_err(|e| e.to_string()),
                (Some(one), None) => self.publisher.send(one).map_err(|e| e.to_string()),
                (Some(first), Some(second)) => {
                    let parts: Vec<&[u8]> = [first, second].into_iter().chain(slices).collect();
                    self.publisher.send_vectored(&parts).map_err(|e| e.to_string())
                }
            };
            sent.map_err(|e| format!("{}: {e}", self.local))?;
        }
        (self.last_source, self.last_seq) = (att.source, att.seq);
        self.publisher.set_user_words([att.source, att.seq]);
        Ok(())
    }
}

/// Whether the local channel exists.
fn exists(name: &Name) -> bool {
    !matches!(Segment::open(name, &Options::default()), Err(Error::NotFound { .. }))
}

/// The header parameters of a publisher's channel (for its message type).
fn layout_params(p: &Publisher) -> [u64; 8] {
    shmkit::layout::validate(p.segment()).map_or([0; 8], |h| h.params)
}

/// Problems reported once per import (a stream can repeat them millions of times).
#[derive(Default)]
struct Said {
    foreign: bool,
    mismatch: bool,
    too_large: bool,
}

fn once(flag: &mut bool, what: impl FnOnce() -> String) {
    if !*flag {
        *flag = true;
        log(what());
    }
}
