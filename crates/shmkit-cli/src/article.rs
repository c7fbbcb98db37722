//! `shmkit demo server|client`: either side of the "IPC - Shared Memory" article's
//! ping/pong demo, in either of its two dialects, so shmkit can talk to the article's
//! own programs (and they to it).
//!
//! Both dialects rendezvous on `ftok(PATH, PROJ)` (default `/tmp/example`, 42; the file
//! is created empty if missing) and a 20-byte System V segment created with `IPC_CREAT`
//! but not `IPC_EXCL`, so whichever side comes first creates it zero-filled.
//!
//! - **python** (mode 0644): 4 bytes at offset 0. The client writes `ping` and waits
//!   until the bytes differ from `ping`; after the rounds it writes `end` (3 bytes,
//!   leaving `endg`). The server waits for `ping`, then while the first byte is not
//!   `e`: replies `pong` and waits until the bytes differ from `pong`.
//! - **c** (mode 0600): byte 0 is the sender's tag (`c` client, `s` server), the text
//!   follows NUL-terminated: `ping`, `pong`, and `end` from the client. Each side waits
//!   until the tag is the other side's.
//!
//! The server removes the segment and the file at the end; the client only detaches.
//! A stale `end` left by an earlier run is never taken for a fresh one: the server
//! waits for a `ping` before anything else, and the client overwrites what it finds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use shmkit::segment::sysv;
use shmkit::{Error, Name, Options, Segment};

use crate::util::{fail, CliResult, Context};

/// Size of the article's segment.
pub const SIZE: usize = 20;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// 4 bytes at offset 0 (`ping`, `pong`, `end`), mode 0644.
    Python,
    /// Sender tag at byte 0, NUL-terminated text from byte 1, mode 0600.
    C,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Sleep-poll (~2 µs requested, as the article does; the kernel makes it ~60 µs).
    Sleep,
    /// Spin on the byte.
    Spin,
    /// Spin for 50 µs, then sleep-poll.
    Adaptive,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ArticleArgs {
    /// The protocol dialect.
    #[arg(long, value_enum, default_value = "python")]
    pub dialect: Dialect,
    /// The ftok rendezvous file (created empty if missing).
    #[arg(long, default_value = "/tmp/example")]
    pub path: PathBuf,
    /// The ftok project id.
    #[arg(long, default_value = "42", value_parser = clap::value_parser!(u8).range(1..))]
    pub proj: u8,
    /// Round trips the client makes.
    #[arg(long, default_value = "100")]
    pub rounds: u64,
    /// How to wait for the other side.
    #[arg(long, value_enum, default_value = "sleep")]
    pub wait: Wait,
    /// Give up when the other side does not answer for this many seconds.
    #[arg(long, default_value = "10", value_name = "SECS")]
    pub timeout: f64,
    /// Print only the summary.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The two roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

struct Shm {
    seg: Segment,
    key: i32,
}

impl Shm {
    fn open(args: &ArticleArgs) -> CliResult<Shm> {
        if !args.path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&args.path)
                .map_err(|e| Error::io("open", format!("{:?}", args.path.display().to_string()), e))
                .context("cannot create the rendezvous file")?;
        }
        let key = sysv::ftok(&args.path, args.proj).context(format!(
            "ftok({}, {})",
            args.path.display(),
            args.proj
        ))?;
        let mode = match args.dialect {
            Dialect::Python => 0o644,
            Dialect::C => 0o600,
        };
        let opts = Options { mode, open_existing: true, ..Options::default() };
        let wrong_size = |found: &dyn std::fmt::Display| {
            fail(format!(
                "the SysV segment under key 0x{:08x} has {found} bytes; the demo protocol uses {SIZE}",
                key as u32
            ))
        };
        let seg = match Segment::create(&Name::SysVKey(key), SIZE, &opts) {
            Ok(seg) => seg,
            // Smaller than asked for (shmget refuses it).
            Err(Error::Incompatible { found, .. }) => return wrong_size(&found),
            Err(e) => {
                return Err(e)
                    .context(format!("cannot get the segment for key 0x{:08x}", key as u32))
            }
        };
        // Only the server's explicit removal ends the segment's life.
        seg.persist();
        // Larger than asked for (shmget accepts it).
        if seg.len() != SIZE {
            return wrong_size(&seg.len());
        }
        Ok(Shm { seg, key })
    }

    /// The first 4 bytes as one atomic word (the Python dialect's message).
    fn word(&self) -> &AtomicU32 {
        // SAFETY: the segment is 20 bytes and page-aligned; offset 0 holds a u32 that
        // both sides access with single 4-byte loads and stores.
        unsafe { &*self.seg.as_ptr().cast::<AtomicU32>() }
    }

    /// Byte 0 (the C dialect's sender tag).
    fn tag(&self) -> &AtomicU8 {
        // SAFETY: byte 0 of the mapping, accessed atomically.
        unsafe { &*self.seg.as_ptr().cast::<AtomicU8>() }
    }

    /// The C dialect's text (bytes 1.., up to the NUL).
    fn text(&self) -> String {
        let mut b = [0u8; SIZE - 1];
        // SAFETY: bytes 1..20 are inside the mapping; copied out, never borrowed.
        unsafe { std::ptr::copy_nonoverlapping(self.seg.as_ptr().add(1), b.as_mut_ptr(), b.len()) };
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }

    /// Writes the C dialect's text, then the tag (Release), so a peer that sees the tag
    /// sees the text.
    fn send_c(&self, tag: u8, text: &str) {
        let mut b = [0u8; SIZE - 1];
        b[..text.len()].copy_from_slice(text.as_bytes());
        // SAFETY: bytes 1..20 are inside the mapping; the peer reads them only after
        // seeing our tag.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), self.seg.as_ptr().add(1), text.len() + 1)
        };
        self.tag().store(tag, Ordering::Release);
    }
}

fn python_word(s: &[u8; 4]) -> u32 {
    u32::from_ne_bytes(*s)
}

/// Waits until `done()` holds, the way `--wait` says, failing after the timeout.
fn wait_until(args: &ArticleArgs, what: &str, mut done: impl FnMut() -> bool) -> CliResult {
    let timeout = Duration::from_secs_f64(args.timeout.max(0.0));
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if done() {
            return Ok(());
        }
        let spinning = match args.wait {
            Wait::Spin => true,
            Wait::Sleep => false,
            Wait::Adaptive => start.elapsed() < Duration::from_micros(50),
        };
        if spinning {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 1024 != 0 {
                continue;
            }
            if spins % (1 << 16) == 0 {
                std::thread::yield_now();
            }
        } else {
            std::thread::sleep(Duration::from_micros(2));
        }
        if start.elapsed() > timeout {
            return fail(format!(
                "no {what} within {:.1} s: is the other side running?",
                args.timeout
            ));
        }
    }
}

pub fn run(role: Role, args: &ArticleArgs) -> CliResult {
    let shm = Shm::open(args)?;
    let say = |line: &str| {
        if !args.quiet {
            println!("{line}");
        }
    };
    let rounds = match role {
        Role::Client => client(&shm, args, &say)?,
        Role::Server => match server(&shm, args, &say) {
            Ok(done) => done,
            Err(e) => {
                // The server owns the rendezvous: do not leave it behind on failure.
                let _ = shm.seg.remove();
                let _ = std::fs::remove_file(&args.path);
                return Err(e);
            }
        },
    };
    let (rounds, total) = rounds;
    if role == Role::Server {
        shm.seg.remove().context("cannot remove the segment")?;
        std::fs::remove_file(&args.path)
            .context(format!("cannot remove {}", args.path.display()))?;
    }
    let per = if rounds > 0 { total.as_secs_f64() * 1e9 / rounds as f64 } else { 0.0 };
    println!(
        "{}: {rounds} rounds ({:?} dialect, key 0x{:08x}) in {}: {} per round trip{}",
        if role == Role::Server { "Server" } else { "Client" },
        args.dialect,
        shm.key as u32,
        crate::stats::ns(total.as_secs_f64() * 1e9),
        crate::stats::ns(per),
        if role == Role::Server { "; removed the segment and the file" } else { "" }
    );
    Ok(())
}

/// Returns the rounds made and the time from the first ping to the end.
fn client(shm: &Shm, args: &ArticleArgs, say: &dyn Fn(&str)) -> CliResult<(u64, Duration)> {
    let ping = python_word(b"ping");
    let stale = match args.dialect {
        Dialect::Python => shm.word().load(Ordering::Acquire) == python_word(b"endg"),
        Dialect::C => shm.tag().load(Ordering::Acquire) == b'c' && shm.text() == "end",
    };
    if stale {
        say("Client: found a stale end from a previous run; waiting for a fresh server");
    }
    let started = Instant::now();
    for _ in 0..args.rounds {
        match args.dialect {
            Dialect::Python => {
                shm.word().store(ping, Ordering::Release);
                say("Client: Sent ping");
                wait_until(args, "reply from the server", || {
                    shm.word().load(Ordering::Acquire) != ping
                })?;
                let reply = shm.word().load(Ordering::Acquire).to_ne_bytes();
                say(&format!("Client: Received {}", String::from_utf8_lossy(&reply)));
            }
            Dialect::C => {
                shm.send_c(b'c', "ping");
                say("Client: Sent ping");
                wait_until(args, "reply from the server", || {
                    shm.tag().load(Ordering::Acquire) == b's'
                })?;
                say(&format!("Client: Received {}", shm.text()));
            }
        }
    }
    match args.dialect {
        Dialect::Python => {
            // "end" over the first 3 bytes: `endg` stays in place, as the article's
            // client leaves it.
            let mut b = shm.word().load(Ordering::Acquire).to_ne_bytes();
            b[..3].copy_from_slice(b"end");
            shm.word().store(u32::from_ne_bytes(b), Ordering::Release);
        }
        Dialect::C => shm.send_c(b'c', "end"),
    }
    say("Client: Sent end");
    Ok((args.rounds, started.elapsed()))
}

/// Returns the rounds served and the time from the first ping to the end.
fn server(shm: &Shm, args: &ArticleArgs, say: &dyn Fn(&str)) -> CliResult<(u64, Duration)> {
    let (ping, pong) = (python_word(b"ping"), python_word(b"pong"));
    let mut rounds = 0;
    let started;
    match args.dialect {
        Dialect::Python => {
            wait_until(args, "ping from a client", || shm.word().load(Ordering::Acquire) == ping)?;
            started = Instant::now();
            while shm.word().load(Ordering::Acquire).to_ne_bytes()[0] != b'e' {
                say("Server: Received ping");
                shm.word().store(pong, Ordering::Release);
                say("Server: Sent pong");
                rounds += 1;
                wait_until(args, "message from the client", || {
                    shm.word().load(Ordering::Acquire) != pong
                })?;
            }
        }
        Dialect::C => {
            wait_until(args, "ping from a client", || {
                shm.tag().load(Ordering::Acquire) == b'c' && shm.text() == "ping"
            })?;
            started = Instant::now();
            loop {
                let text = shm.text();
                if text == "end" {
                    break;
                }
                say(&format!("Server: Received {text}"));
                shm.send_c(b's', "pong");
                say("Server: Sent pong");
                rounds += 1;
                wait_until(args, "message from the client", || {
                    shm.tag().load(Ordering::Acquire) == b'c'
                })?;
            }
        }
    }
    say("Server: Received end");
    Ok((rounds, started.elapsed()))
}
