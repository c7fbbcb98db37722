//! What the CLI's channel tests share: the binary, unique POSIX names, and whether a
//! name is still in /dev/shm.
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
