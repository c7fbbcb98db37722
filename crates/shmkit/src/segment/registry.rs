//! The registry of file-backed segments shmkit created, so that `gc` can find what a
//! crashed process left in some directory (POSIX and SysV segments can be listed from
//! the kernel; files anywhere cannot).
//!
//! One small file per segment in the registry directory, named by a hash of the
//! segment's absolute path and holding that path. The directory is
//! `$SHMKIT_REGISTRY`, else `$XDG_STATE_HOME/shmkit/files`, else
//! `$HOME/.local/state/shmkit/files`: it lives as long as the files it records (a
//! directory under /tmp would vanish at reboot while the files stay). Registering is
//! best effort: a read-only home must not stop anyone from creating a segment.

use std::path::{Path, PathBuf};

/// The registry directory, if one can be named.
pub fn dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("SHMKIT_REGISTRY")
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("shmkit/files")))
        .or_else(|| var("HOME").map(|h| h.join(".local/state/shmkit/files")))
}

fn absolute(path: &Path) -> Option<PathBuf> {
    if path.is_absolute() {
        Some(path.to_path_buf())
    } else {
        std::env::current_dir().ok().map(|d| d.join(path))
    }
}

fn entry(path: &Path) -> Option<(PathBuf, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let abs = absolute(path)?;
    let hash =
        abs.as_os_str().as_bytes().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    Some((dir()?.join(format!("{hash:016x}")), abs))
}

/// Records a file-backed segment just created at `path`.
pub(crate) fn register(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Some((entry, abs)) = entry(path) else { return };
    if let Some(parent) = entry.parent() {
        let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent);
    }
    let _ = std::fs::write(entry, abs.as_os_str().as_bytes());
}

/// Forgets the segment at `path` (it was removed).
pub(crate) fn unregister(path: &Path) {
    if let Some((entry, _)) = entry(path) {
        let _ = std::fs::remove_file(entry);
    }
}

use std::os::unix::fs::DirBuilderExt;

/// Every registered segment: (registry entry, the segment's path).
pub fn entries() -> Vec<(PathBuf, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let Some(dir) = dir() else { return Vec::new() };
    let Ok(read) = std::fs::read_dir(dir) else { return Vec::new() };
    read.flatten()
        .filter_map(|e| {
            let bytes = std::fs::read(e.path()).ok()?;
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
            path.is_absolute().then(|| (e.path(), path))
        })
        .collect()
}

/// Removes a registry entry (gc, for a segment that is gone or no longer shmkit's).
pub fn forget(entry: &Path) {
    let _ = std::fs::remove_file(entry);
}
