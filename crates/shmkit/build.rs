//! Tests that need root (running a peer as another user, mounting a filesystem, reading
//! physical frame numbers) are compiled as ignored, with the reason, unless the build
//! runs as root: a normal user's `cargo test` then lists them as not run instead of
//! passing them silently. CI runs as root and runs them.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(shmkit_root)");
    println!("cargo::rerun-if-changed=build.rs");
    // `Uid:` real, effective, saved, filesystem.
    let root = std::fs::read_to_string("/proc/self/status").ok().is_some_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
    });
    if root {
        println!("cargo::rustc-cfg=shmkit_root");
    }
}
