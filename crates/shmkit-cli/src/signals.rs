//! Ctrl-C, `kill` and hangup: a command removes what it created, stops the processes
//! it started, and exits with the conventional status (128 + the signal: 130 for
//! SIGINT, 143 for SIGTERM, 129 for SIGHUP).
//!
//! [`install`] blocks SIGINT, SIGTERM and SIGHUP in the main thread before any other
//! thread exists (threads inherit the mask; `std::process::Command` gives child
//! processes an empty one), and starts one thread, `shmkit-signals`, that takes them
//! with `sigwait`. No signal handler runs at all, so nothing that is unsafe in a
//! handler can happen; the thread does the cleanup with ordinary code while the rest
//! of the process carries on, then exits the process.
//!
//! Commands register what they create ([`created`], [`created_prefix`], [`dir`]) and
//! the processes they start ([`child`]); each registration is withdrawn when its guard
//! drops, so what the command removes or hands over itself is left alone.

use std::path::PathBuf;
use std::sync::Mutex;

use shmkit::{Name, Options, Segment};

/// Something to undo on a signal.
enum Undo {
    /// A segment this process created.
    Segment(Name),
    /// Every `/dev/shm` entry whose name starts with this (peers' objects).
    PosixPrefix(String),
    /// A directory and everything in it.
    Dir(PathBuf),
    /// A child process to kill.
    Child(u32),
    /// Anything else (a row's message queues).
    Task(Box<dyn FnOnce() + Send>),
}

static REGISTRY: Mutex<Vec<(u64, Undo)>> = Mutex::new(Vec::new());
/// Taken by whichever ends the process: the signal thread, or `exit` at the end of a
/// command.
static EXIT: Mutex<()> = Mutex::new(());
/// The signal being handled (0: none).
static HANDLING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
/// Held while a child process is started and registered, and taken for good by the
/// signal thread: once it has it, no child can appear that it would not know of (a
/// spawner then waits until the process exits). `true` inside once it is exiting.
static SPAWNING: Mutex<bool> = Mutex::new(false);
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Withdraws its registration when dropped.
#[derive(Debug)]
#[must_use = "the registration lasts as long as the guard"]
pub struct Guard(u64);

impl Drop for Guard {
    fn drop(&mut self) {
        let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|(id, _)| *id != self.0);
    }
}

fn register(undo: Undo) -> Guard {
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).push((id, undo));
    Guard(id)
}

/// Removes `name` if a signal ends the process while the guard lives.
pub fn created(name: &Name) -> Guard {
    register(Undo::Segment(name.clone()))
}

/// Removes every POSIX object named `prefix*` (created by this process's peers).
pub fn created_prefix(prefix: &str) -> Guard {
    register(Undo::PosixPrefix(prefix.trim_start_matches('/').to_string()))
}

/// Removes `path` and everything under it.
pub fn dir(path: PathBuf) -> Guard {
    register(Undo::Dir(path))
}

/// Kills process `pid` (SIGKILL) first.
pub fn child(pid: u32) -> Guard {
    register(Undo::Child(pid))
}

/// Starts `cmd` as a child that a signal kills first: started and registered under the
/// lock the signal thread takes, so it never misses one; refused once it is exiting.
pub fn spawn(cmd: &mut std::process::Command) -> std::io::Result<(std::process::Child, Guard)> {
    let exiting = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
    if *exiting {
        return Err(std::io::Error::other("exiting on a signal"));
    }
    let started = cmd.spawn()?;
    let guard = child(started.id());
    drop(exiting);
    Ok((started, guard))
}

/// Runs `task` (after the children are gone).
pub fn task(task: impl FnOnce() + Send + 'static) -> Guard {
    register(Undo::Task(Box::new(task)))
}

/// Withdraws every registration of segment `name` (the command has decided what
/// becomes of it: `chan::finish`).
pub fn settled(name: &Name) {
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    r.retain(|(_, u)| !matches!(u, Undo::Segment(n) if n == name));
}

/// Blocks the three signals and starts the thread that takes them. Call first in
/// `main`, before any thread is started.
pub fn install() {
    // SAFETY: sigset operations on a zeroed local set; pthread_sigmask on the calling
    // thread with a valid set and a null old-set pointer.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    // The thread is born with every signal blocked (it inherits this thread's mask,
    // blocked whole around the spawn): every other signal is for the threads that
    // expect it, and a process-directed signal goes to a thread that does not block it
    // — never this one, even before it first runs. (Blocking them from inside the
    // thread left a window: a bench peer that blocks SIGUSR1 and takes it with
    // `sigwaitinfo` was killed by one that reached the new thread first, on a busy
    // machine.)
    // SAFETY: a zeroed set filled by sigfillset; `before` receives this thread's mask.
    let before = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut before);
        before
    };
    let spawned = std::thread::Builder::new()
        .name("shmkit-signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            loop {
                let mut sig = 0;
                // SAFETY: `set` is a valid signal set; `sig` a valid out-pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                    HANDLING.store(sig, std::sync::atomic::Ordering::SeqCst);
                    let _exit = EXIT.lock().unwrap_or_else(|e| e.into_inner());
                    undo_all();
                    std::process::exit(128 + sig);
                }
            }
        });
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut()) };
    if spawned.is_err() {
        // Without the thread, leave the signals to their default action.
        // SAFETY: as above, unblocking the same set.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

/// Ends the process with `code` when a command has run its course, unless a signal
/// came meanwhile (being handled, or still pending): then the signal thread finishes
/// its cleanup and the status is the signal's.
pub fn exit(code: i32) -> ! {
    let exit = EXIT.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: sigpending fills a zeroed local set; sigismember reads it.
    let pending = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        [libc::SIGINT, libc::SIGTERM, libc::SIGHUP]
            .iter()
            .any(|&sig| libc::sigismember(&set, sig) == 1)
    };
    if pending || HANDLING.load(std::sync::atomic::Ordering::SeqCst) != 0 {
        drop(exit);
        loop {
            std::thread::park();
        }
    }
    std::process::exit(code)
}

/// Whether `pid`'s parent is this process (`/proc/PID/stat` field 4).
fn is_our_child(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The command name (field 2) is in parentheses and may contain anything.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id())
}

/// Kills the registered children, then removes the registered objects.
fn undo_all() {
    // No child is started from here on (the lock is never given back).
    let mut exiting = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
    *exiting = true;
    std::mem::forget(exiting);
    let undo = std::mem::take(&mut *REGISTRY.lock().unwrap_or_else(|e| e.into_inner()));
    for (_, u) in &undo {
        // Only a process that is still our child: a pid reaped meanwhile may already
        // name someone else's process.
        if let Undo::Child(pid) = u {
            if is_our_child(*pid) {
                // SAFETY: kill takes no pointers.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
    // And any other child (one started a moment before it could be registered).
    let others: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
                .filter(|&pid| is_our_child(pid))
                .collect()
        })
        .unwrap_or_default();
    for &pid in &others {
        // SAFETY: kill takes no pointers; `pid` is our child (not reaped: it is listed).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    // Reap them, so that what they held is released before we look.
    let registered = undo.iter().filter_map(|(_, u)| match u {
        Undo::Child(pid) => Some(*pid),
        _ => None,
    });
    for pid in registered.chain(others.iter().copied()) {
        // SAFETY: waiting for our own child; a null status pointer is allowed. A child
        // reaped already (by us or the main thread) is ECHILD.
        unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
    }
    for (_, u) in undo {
        match u {
            Undo::Segment(name) => {
                let opts = Options { read_only: true, ..Options::default() };
                if let Ok(seg) = Segment::open(&name, &opts) {
                    let _ = seg.remove();
                }
            }
            Undo::PosixPrefix(prefix) => {
                if let Ok(entries) = std::fs::read_dir("/dev/shm") {
                    for e in entries.flatten() {
                        if e.file_name().to_string_lossy().starts_with(&prefix) {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
            }
            Undo::Dir(path) => {
                let _ = std::fs::remove_dir_all(path);
            }
            Undo::Task(task) => task(),
            Undo::Child(_) => {}
        }
    }
}
