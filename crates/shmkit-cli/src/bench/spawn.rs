//! Starting the peer processes of a row and waiting for them without ever hanging: a
//! pong that never says `ready`, a ping that never finishes, or one side dying while the
//! other blocks forever (an eventfd read, a message queue) costs the row, not the run.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a peer may outlive the other before it is killed.
const GRACE: Duration = Duration::from_secs(2);

/// A peer process with its output pipes.
pub struct Peer {
    child: Child,
    /// `pidfd_open(pid)`: readable when the process exits (None if the kernel lacks it).
    pidfd: Option<OwnedFd>,
    /// Stdout read so far.
    pub out: Vec<u8>,
    pub status: Option<ExitStatus>,
    /// Killed first if a signal ends the run.
    _signal: crate::signals::Guard,
}

/// Starts `exe __bench-peer ARGS`, handing down `fds` (which the orchestrator created
/// close-on-exec: only this child gets them).
pub fn start(exe: &std::path::Path, args: &[String], fds: &[RawFd]) -> io::Result<Peer> {
    let mut cmd = Command::new(exe);
    cmd.arg("__bench-peer").args(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let fds = fds.to_vec();
    // SAFETY: the closure runs between fork and exec; it only calls fcntl, which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let (child, _signal) = crate::signals::spawn(&mut cmd)?;
    // SAFETY: pidfd_open takes no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a new descriptor owned by nobody else.
    let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    Ok(Peer { child, pidfd, out: Vec::new(), status: None, _signal })
}

/// `poll` on `fds` for readability until `until`; with no descriptors it just sleeps a
/// little (the fallback when pidfds are missing).
fn poll(fds: &[RawFd], until: Instant) {
    let left = until.saturating_duration_since(Instant::now());
    if fds.is_empty() {
        std::thread::sleep(left.min(Duration::from_millis(10)));
        return;
    }
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let ms = left.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `pfds` holds pfds.len() valid pollfd entries.
    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
}

impl Peer {
    /// Reads stdout up to the first line, by `deadline`. None if the peer closed its
    /// stdout (it failed) or the deadline passed.
    pub fn first_line(&mut self, deadline: Instant) -> Option<String> {
        let stdout = self.child.stdout.as_mut()?;
        let fd = stdout.as_raw_fd();
        loop {
            if let Some(end) = self.out.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.out.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            if Instant::now() >= deadline {
                return None;
            }
            poll(&[fd], deadline);
            let mut chunk = [0u8; 512];
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.out.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn try_wait(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status.is_some()
    }

    fn kill(&mut self) {
        if !self.try_wait() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Everything the peer wrote: the rest of stdout, and stderr (after it exited).
    pub fn collect(&mut self) -> (String, String) {
        if let Some(mut s) = self.child.stdout.take() {
            let _ = s.read_to_end(&mut self.out);
        }
        let mut err = String::new();
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        (String::from_utf8_lossy(&self.out).into_owned(), err)
    }

    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

impl Drop for Peer {
    /// A peer nobody waits for any more (its row failed early) is killed and reaped,
    /// never left running.
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for every peer to exit, sleeping in poll(2) on their pidfds so the waiting
/// orchestrator takes no CPU time from them. Once one has exited the others get
/// [`GRACE`]; at `deadline` every one still running is killed. Returns whether the
/// deadline was hit.
pub fn wait_all(peers: &mut [&mut Peer], deadline: Instant) -> bool {
    let mut first_exit: Option<Instant> = None;
    loop {
        let mut running = Vec::new();
        for (i, p) in peers.iter_mut().enumerate() {
            if p.try_wait() {
                first_exit.get_or_insert_with(Instant::now);
            } else {
                running.push(i);
            }
        }
        if running.is_empty() {
            return false;
        }
        let until = first_exit.map_or(deadline, |t| (t + GRACE).min(deadline));
        if Instant::now() >= until {
            for &i in &running {
                peers[i].kill();
            }
            return until == deadline;
        }
        let fds: Vec<RawFd> = running
            .iter()
            .filter_map(|&i| peers[i].pidfd.as_ref().map(|f| f.as_raw_fd()))
            .collect();
        poll(if fds.len() == running.len() { &fds } else { &[] }, until);
    }
}
