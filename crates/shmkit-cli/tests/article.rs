//! `shmkit demo server|client` against an independent implementation of the other side
//! of the article's protocol, written here from the protocol's description with raw
//! System V calls, running in this test process while shmkit runs as a child.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shmkit");
const ROUNDS: usize = 100;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Dialect {
    Python,
    C,
}

/// The raw peer's view of the 20-byte segment.
struct Raw {
    addr: *mut u8,
    id: i32,
    spin: bool,
}

impl Raw {
    fn attach(path: &Path, dialect: Dialect, spin: bool) -> Raw {
        if !path.exists() {
            std::fs::write(path, b"").unwrap();
        }
        let c = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: plain libc calls with a valid C string; results checked.
        unsafe {
            let key = libc::ftok(c.as_ptr(), 42);
            assert_ne!(key, -1);
            let mode = if dialect == Dialect::Python { 0o644 } else { 0o600 };
            let id = libc::shmget(key, 20, libc::IPC_CREAT | mode);
            assert_ne!(id, -1, "shmget: {}", std::io::Error::last_os_error());
            let addr = libc::shmat(id, std::ptr::null(), 0);
            assert_ne!(addr as isize, -1);
            Raw { addr: addr.cast(), id, spin }
        }
    }

    fn read(&self, i: usize) -> u8 {
        // SAFETY: i < 20; the other process writes concurrently, hence volatile.
        unsafe { std::ptr::read_volatile(self.addr.add(i)) }
    }

    fn write(&self, i: usize, bytes: &[u8]) {
        for (k, b) in bytes.iter().enumerate() {
            // SAFETY: i + k < 20.
            unsafe { std::ptr::write_volatile(self.addr.add(i + k), *b) };
        }
    }

    fn first4(&self) -> [u8; 4] {
        [self.read(0), self.read(1), self.read(2), self.read(3)]
    }

    fn text(&self) -> Vec<u8> {
        (1..20).map(|i| self.read(i)).take_while(|&b| b != 0).collect()
    }

    /// Polls like the article: sleep a few microseconds (or spin) until `done`.
    fn wait(&self, mut done: impl FnMut(&Raw) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < Duration::from_secs(20), "raw peer: the other side stopped");
            if self.spin {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(2));
            }
        }
    }

    fn client(&self, dialect: Dialect) {
        for _ in 0..ROUNDS {
            match dialect {
                Dialect::Python => {
                    self.write(0, b"ping");
                    self.wait(|r| &r.first4() != b"ping");
                    assert_eq!(&self.first4(), b"pong");
                }
                Dialect::C => {
                    self.write(1, b"ping\0");
                    self.write(0, b"c");
                    self.wait(|r| r.read(0) == b's');
                    assert_eq!(self.text(), b"pong");
                }
            }
        }
        match dialect {
            Dialect::Python => self.write(0, b"end"),
            Dialect::C => {
                self.write(1, b"end\0");
                self.write(0, b"c");
            }
        }
    }

    fn server(&self, dialect: Dialect) -> usize {
        let mut rounds = 0;
        match dialect {
            Dialect::Python => {
                self.wait(|r| &r.first4() == b"ping");
                while self.read(0) != b'e' {
                    self.write(0, b"pong");
                    rounds += 1;
                    self.wait(|r| &r.first4() != b"pong");
                }
                assert_eq!(&self.first4(), b"endg");
            }
            Dialect::C => {
                self.wait(|r| r.read(0) == b'c' && r.text() == b"ping");
                while self.text() != b"end" {
                    self.write(1, b"pong\0");
                    self.write(0, b"s");
                    rounds += 1;
                    self.wait(|r| r.read(0) == b'c');
                }
            }
        }
        rounds
    }

    fn detach(self) {
        // SAFETY: addr came from shmat.
        unsafe { libc::shmdt(self.addr.cast()) };
    }

    fn remove(self) {
        // SAFETY: IPC_RMID ignores the buffer.
        unsafe { libc::shmctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) };
        self.detach();
    }
}

fn rendezvous(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shmkit-article-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("example")
}

fn shmkit_side(role: &str, dialect: Dialect, path: &Path, wait: &str) -> Child {
    let d = if dialect == Dialect::Python { "python" } else { "c" };
    Command::new(BIN)
        .args([
            "demo",
            role,
            "--dialect",
            d,
            "--path",
            path.to_str().unwrap(),
            "--wait",
            wait,
            "--rounds",
        ])
        .arg(ROUNDS.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn key_exists(path: &Path) -> bool {
    shmkit::segment::sysv::ftok(path, 42).is_ok_and(sysv_key_in_use)
}

fn sysv_key_in_use(key: i32) -> bool {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().next().and_then(|k| k.parse::<i32>().ok()) == Some(key))
}

fn shmkit_server_vs_raw_client(dialect: Dialect, wait: &str) {
    let path = rendezvous(&format!("s-{dialect:?}-{wait}"));
    let server = shmkit_side("server", dialect, &path, wait);
    // Let the server create the rendezvous first half the time; either order works.
    let raw = Raw::attach(&path, dialect, wait == "spin");
    let key = shmkit::segment::sysv::ftok(&path, 42).unwrap();
    raw.client(dialect);
    raw.detach();
    let out = server.wait_with_output().unwrap();
    assert!(!sysv_key_in_use(key), "the server removes the segment");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("Server: Received ping").count(), ROUNDS, "{text}");
    assert!(
        text.contains("Server: Received end") && text.contains(&format!("{ROUNDS} rounds")),
        "{text}"
    );
    assert!(!path.exists(), "the server removes the rendezvous file");
    std::fs::remove_dir(path.parent().unwrap()).unwrap();
}

fn raw_server_vs_shmkit_client(dialect: Dialect, wait: &str) {
    let path = rendezvous(&format!("c-{dialect:?}-{wait}"));
    let client = shmkit_side("client", dialect, &path, wait);
    // The client creates the file and segment; attach once it has.
    let start = Instant::now();
    while !key_exists(&path) {
        assert!(start.elapsed() < Duration::from_secs(10), "the client never created the segment");
        std::thread::sleep(Duration::from_millis(1));
    }
    let raw = Raw::attach(&path, dialect, wait == "spin");
    let key = shmkit::segment::sysv::ftok(&path, 42).unwrap();
    let rounds = raw.server(dialect);
    raw.remove();
    assert!(!sysv_key_in_use(key));
    std::fs::remove_file(&path).unwrap();
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(rounds, ROUNDS);
    assert_eq!(text.matches("Client: Received pong").count(), ROUNDS, "{text}");
    assert!(text.contains("Client: Sent end"), "{text}");
    std::fs::remove_dir(path.parent().unwrap()).unwrap();
}

#[test]
fn python_dialect_interoperates_both_ways_with_sleep_and_spin_waits() {
    for wait in ["sleep", "spin"] {
        shmkit_server_vs_raw_client(Dialect::Python, wait);
        raw_server_vs_shmkit_client(Dialect::Python, wait);
    }
}

#[test]
fn c_dialect_interoperates_both_ways_with_sleep_and_spin_waits() {
    for wait in ["sleep", "spin"] {
        shmkit_server_vs_raw_client(Dialect::C, wait);
        raw_server_vs_shmkit_client(Dialect::C, wait);
    }
}

#[test]
fn a_stale_end_does_not_stop_a_new_server_or_client() {
    let path = rendezvous("stale");
    // A previous run's leftovers: a segment saying "endg", as a crashed server leaves.
    let raw = Raw::attach(&path, Dialect::Python, false);
    raw.write(0, b"endg");
    raw.detach();
    let server = shmkit_side("server", Dialect::Python, &path, "sleep");
    let client = shmkit_side("client", Dialect::Python, &path, "sleep");
    let (s, c) = (server.wait_with_output().unwrap(), client.wait_with_output().unwrap());
    assert!(s.status.success() && c.status.success());
    assert!(String::from_utf8_lossy(&c.stdout).contains("stale end"));
    assert!(String::from_utf8_lossy(&s.stdout).contains(&format!("{ROUNDS} rounds")));
    assert!(!path.exists() && !key_exists(&path));
    std::fs::remove_dir(path.parent().unwrap()).unwrap();
}

#[test]
fn bad_input_ends_with_a_clear_message_and_exit_1() {
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();
    let out = run(&["demo", "client", "--path", "/nonexistent-dir/example", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rendezvous file"));

    // A segment of the wrong size under the key.
    let path = rendezvous("size");
    std::fs::write(&path, b"").unwrap();
    let key = shmkit::segment::sysv::ftok(&path, 42).unwrap();
    // SAFETY: plain shmget.
    let id = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | 0o600) };
    assert_ne!(id, -1);
    let out = run(&["demo", "server", "--path", path.to_str().unwrap(), "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("4096 bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: IPC_RMID ignores the buffer.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };

    // A peer that never answers.
    let start = Instant::now();
    let out = run(&["demo", "client", "--path", path.to_str().unwrap(), "--timeout", "0.3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no reply from the server within 0.3 s"));
    assert!(start.elapsed() < Duration::from_secs(10));
    // The client created the segment; clean up as a server would.
    if let Ok(seg) = shmkit::Segment::open(&shmkit::Name::SysVKey(key), &Default::default()) {
        seg.remove().unwrap();
    }
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_dir(path.parent().unwrap()).unwrap();
}
