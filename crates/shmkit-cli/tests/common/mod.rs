//! What the CLI's tests share: the binary, unique POSIX names, whether a name is still
//! in /dev/shm, and busy loops that keep every CPU occupied.
#![allow(dead_code)]

pub const BIN: &str = env!("CARGO_BIN_EXE_shmkit");

/// A process-unique POSIX name: `/shmkit.clitest.<pid>.<tag>.<n>`.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("/shmkit.clitest.{}.{tag}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Whether a POSIX shm name exists.
pub fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name.trim_start_matches('/')).exists()
}

/// Busy loops on every CPU while alive (killed and reaped on drop).
pub struct Hogs(Vec<std::process::Child>);

impl Hogs {
    pub fn start() -> Hogs {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hog = || {
            std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap()
        };
        Hogs((0..cpus).map(|_| hog()).collect())
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for h in &mut self.0 {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}
