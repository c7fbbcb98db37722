//! `--export LOCAL=KEY`: every message of a local channel becomes one Zenoh sample on
//! `KEY`, in order, with the attachment of [`crate::wire`]; the export's description is
//! answered on `shmkit/meta/KEY`.
//!
//! The local channel is read on a thread of its own with the end's blocking receive
//! (spin, then park on the channel's futex): a broadcast channel as one more
//! subscriber (the publisher is not disturbed), an SPSC or MPSC channel as its
//! receiver (the bridge consumes it). Setup, descriptions and restarts run as a task.
//! Lossless channels (SPSC, MPSC, broadcast under backpressure) are published with
//! congestion control *block*: a slow network or remote subscriber holds the bridge,
//! which holds the local channel, which holds its sender. Broadcast under overwrite is
//! published with *drop*.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shmkit::channel::broadcast::{self, Overflow};
use shmkit::channel::{mpsc, Deadline, Failure, Receiver, RecvEnd, WaitStrategy};
use shmkit::layout::{self, ObjectKind};
use shmkit::typed::TypeTag;
use shmkit::{Error, Name, Options, Segment};
use zenoh::qos::CongestionControl;
use zenoh::Session;

use crate::wire::{self, Attachment, Export};
use crate::{log, Shared};

/// One `--export`.
#[derive(Debug, Clone)]
pub struct Spec {
    pub local: Name,
    pub key: String,
}

/// The local end an export reads: any receiving end, through the end vocabulary.
type Source = Box<dyn FnMut(&mut Vec<u8>, &mut u64) -> Option<Got> + Send>;

/// `end` as a [`Source`], with the bridge's wait strategy; its limit goes in `export`.
fn reading<R: RecvEnd>(mut end: R, wait: WaitStrategy, export: &mut Export) -> Source {
    end.set_wait_strategy(wait);
    export.max_message = end.max_message() as u64;
    Box::new(move |buf, counter| next(&mut end, buf, counter))
}

/// What one receive from the local channel gave.
enum Got {
    /// A message, numbered.
    Message(u64),
    /// The local publisher overtook the bridge: these were lost.
    Lagged(u64),
    /// The writing side closed or died.
    Gone(String),
    /// The channel is unusable.
    Fatal(String),
}

/// How long a receive waits before the pump looks at its stop flag.
const LOOK_AT_STOP: Duration = Duration::from_millis(100);

/// Waits for the next message (the end's wait strategy: spin, then park on the
/// channel's futex), at most [`LOOK_AT_STOP`]: `None` if none came. A message is
/// numbered by the channel's position where it has one (broadcast), else by `counter`.
fn next<R: RecvEnd>(end: &mut R, buf: &mut Vec<u8>, counter: &mut u64) -> Option<Got> {
    let position = end.position();
    match end.recv_until(buf, Deadline::After(LOOK_AT_STOP)) {
        Ok(_) => Some(Got::Message(position.unwrap_or_else(|| {
            *counter += 1;
            *counter - 1
        }))),
        Err(Failure::Timeout | Failure::Empty) => None,
        Err(Failure::Lagged { missed }) => Some(Got::Lagged(missed)),
        Err(Failure::PeerDead { pid }) => {
            Some(Got::Gone(format!("its {} (pid {pid}) died", R::PEER)))
        }
        Err(Failure::Disconnected) => Some(Got::Gone(format!("its {} closed it", R::PEER))),
        Err(Failure::Corrupt { what }) => Some(Got::Fatal(format!("corrupt: {what}"))),
        Err(other) => Some(Got::Fatal(other.to_string())),
    }
}

/// Opens the local channel for reading, waiting for it to exist.
async fn open(
    spec: &Spec,
    shared: &Shared,
) -> Result<(Source, Export, u64, Option<TypeTag>), String> {
    let mut said = false;
    // A segment seen while its creator is still making it (sized zero, or a blank
    // header) is given the creator's time (`layout::OPEN_TIMEOUT`) before it counts as
    // not a channel.
    let mut first_seen: Option<std::time::Instant> = None;
    let (seg, h) = loop {
        let mut in_creation = |e: &Error| {
            let since = *first_seen.get_or_insert_with(std::time::Instant::now);
            since.elapsed() < layout::OPEN_TIMEOUT && !matches!(e, Error::PermissionDenied { .. })
        };
        match Segment::open(&spec.local, &Options::default()) {
            Ok(seg) => match layout::wait_ready(&seg, layout::OPEN_TIMEOUT) {
                Ok(h) => break (seg, h),
                Err(e) if in_creation(&e) => {}
                Err(e) => return Err(format!("{} is not a shmkit channel: {e}", spec.local)),
            },
            Err(Error::NotFound { .. }) => {}
            Err(e) if in_creation(&e) => {}
            Err(e) => return Err(format!("cannot open {}: {e}", spec.local)),
        }
        if !said {
            log(format!("export {}: waiting for {} to be created", spec.key, spec.local));
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(if first_seen.is_some() { 5 } else { 100 })).await;
    };
    let source = wire::source_id(&spec.local.to_string(), h.creator_pid, h.created_ns);
    let message_type = TypeTag::from_params(&h.params);
    let mut export = Export {
        key: spec.key.clone(),
        kind: h.object.name().into(),
        local: spec.local.to_string(),
        host: wire::host_name(),
        pid: std::process::id(),
        max_message: 0,
        slots: None,
        overflow: "backpressure".into(),
        message_type: message_type.map(Into::into),
    };
    let wait = shared.wait;
    let attach = |e: Error| format!("cannot read {}: {e}", spec.local);
    let end = match h.object {
        ObjectKind::Broadcast => {
            let sub = broadcast::Subscriber::from_segment(seg).map_err(attach)?;
            let geo = sub.geometry();
            export.slots = Some(geo.slots);
            export.overflow = geo.overflow.to_string();
            reading(sub, wait, &mut export)
        }
        ObjectKind::Spsc => {
            reading(Receiver::from_segment(seg).map_err(attach)?, wait, &mut export)
        }
        ObjectKind::Mpsc => {
            reading(mpsc::Receiver::from_segment(seg).map_err(attach)?, wait, &mut export)
        }
        other => {
            return Err(format!(
                "{} is a {} object; a bridge exports broadcast, SPSC and MPSC channels",
                spec.local,
                other.name()
            ))
        }
    };
    Ok((end, export, source, message_type))
}

/// Runs one export until the bridge stops; an error ends this export only.
pub async fn run(session: Session, spec: Spec, shared: Arc<Shared>) {
    if let Err(e) = serve(&session, &spec, &shared).await {
        log(format!("export {}: {e}; this export stops, the others go on", spec.key));
    }
}

async fn serve(session: &Session, spec: &Spec, shared: &Shared) -> Result<(), String> {
    let (source, export, source_id, message_type) = open(spec, shared).await?;
    let lossless = export.overflow != Overflow::Overwrite.to_string();
    let zerr = |e: zenoh::Error| format!("zenoh: {e}");
    let publisher = session
        .declare_publisher(spec.key.clone())
        .congestion_control(if lossless {
            CongestionControl::Block
        } else {
            CongestionControl::Drop
        })
        .await
        .map_err(zerr)?;
    // The description, replaced when the channel is (a new one under the same name).
    let description = Arc::new(Mutex::new(describe(&export)?));
    let meta_key = wire::meta_key(&spec.key);
    let answer = description.clone();
    let queryable = session
        .declare_queryable(meta_key.clone())
        .callback(move |query| {
            use zenoh::Wait;
            let text = answer.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Err(e) = query.reply(meta_key.clone(), text).wait() {
                log(format!("answering a query for {meta_key}: {e}"));
            }
        })
        .await
        .map_err(zerr)?;
    log(format!(
        "export {}: {} {} -> {} ({})",
        spec.key,
        export.kind,
        spec.local,
        spec.key,
        if lossless { "reliable, congestion control block" } else { "congestion control drop" }
    ));
    let mut pump = Pump {
        source: Some(source),
        publisher: Arc::new(publisher),
        key: spec.key.clone(),
        local: spec.local.to_string(),
        source_id,
        message_type,
        // SPSC and MPSC exports number from a random start: a restarted bridge is a
        // new stream, not a gap (what it did not read is still in the ring).
        counter: random_u64() >> 1,
        stopping: shared.stopping.clone(),
    };
    let mut gone_said = false;
    let result = loop {
        // The messages flow on a thread of their own, which parks on the channel's
        // futex when it is empty: a wake-up there is cheaper than the doorbell and
        // the runtime's poll (docs/PERFORMANCE.md, "Across hosts").
        let running = tokio::task::spawn_blocking(move || {
            let why = pump.run();
            (pump, why)
        });
        let why;
        (pump, why) = match running.await {
            Ok(done) => done,
            Err(e) => break Err(format!("the export's thread: {e}")),
        };
        match why {
            Stop::Gone(why) => {
                if !gone_said {
                    log(format!(
                        "export {}: {} {why}; waiting for a new one to take it over",
                        spec.key, spec.local
                    ));
                    gone_said = true;
                }
                // Look again by name: the channel may have been taken over (the same
                // one, revived) or made again (another one, which the bridge then reads).
                tokio::time::sleep(Duration::from_millis(100)).await;
                pump.source = None;
                let (reopened, export, id, ty) = match open(spec, shared).await {
                    Ok(found) => found,
                    Err(e) => break Err(e),
                };
                if (export.overflow != Overflow::Overwrite.to_string()) != lossless {
                    break Err(format!(
                        "{} was made again with another overflow policy: restart the bridge",
                        spec.local
                    ));
                }
                *description.lock().unwrap_or_else(|e| e.into_inner()) = describe(&export)?;
                if id != pump.source_id {
                    gone_said = false; // another channel: say so if it goes too
                }
                (pump.source, pump.source_id, pump.message_type) = (Some(reopened), id, ty);
            }
            Stop::Fatal(why) => break Err(why),
        }
    };
    drop(queryable);
    result
}

/// Why [`pump`] returned.
enum Stop {
    Gone(String),
    Fatal(String),
}

/// An export's data path, run on a thread of its own.
struct Pump {
    /// `None` only while the channel is being looked up again.
    source: Option<Source>,
    publisher: Arc<zenoh::pubsub::Publisher<'static>>,
    key: String,
    local: String,
    source_id: u64,
    message_type: Option<TypeTag>,
    /// SPSC and MPSC numbering.
    counter: u64,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Pump {
    /// Moves messages from the local channel to Zenoh until the writing side goes,
    /// something fails, or the bridge stops.
    fn run(&mut self) -> Stop {
        use zenoh::Wait;
        let Some(source) = self.source.as_mut() else {
            return Stop::Fatal("no channel".into());
        };
        let mut buf = Vec::new();
        loop {
            let Some(got) = source(&mut buf, &mut self.counter) else {
                if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    return Stop::Fatal("the bridge is stopping".into());
                }
                continue;
            };
            match got {
                Got::Message(seq) => {
                    let (source, message_type) = (self.source_id, self.message_type);
                    let attachment = Attachment { source, seq, message_type }.encode();
                    // The buffer moves into the sample (no copy); the next receive
                    // makes another. The attachment goes by value (one allocation,
                    // not a Vec and then its shared slice).
                    let put = self.publisher.put(std::mem::take(&mut buf)).attachment(attachment);
                    if let Err(e) = put.wait() {
                        return Stop::Fatal(format!("zenoh: {e}"));
                    }
                }
                // The next message's number jumps: importers report the gap.
                Got::Lagged(missed) => log(format!(
                    "export {}: fell behind {}: {missed} messages lost",
                    self.key, self.local
                )),
                Got::Gone(why) => return Stop::Gone(why),
                Got::Fatal(why) => return Stop::Fatal(format!("{}: {why}", self.local)),
            }
        }
    }
}

fn describe(export: &Export) -> Result<Vec<u8>, String> {
    serde_json::to_vec(export).map_err(|e| e.to_string())
}

/// 64 random bits (for stream numbering only): std's hasher keys come from the OS.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}
