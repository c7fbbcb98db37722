//! File-backed segments: `open` + `ftruncate` + `mmap(MAP_SHARED)`.
//!
//! The file is sized before it is mapped, and an opened file's size comes from `fstat`,
//! so no access falls past its end (which would raise SIGBUS). Paths are opened with
//! `O_NOFOLLOW`: a symlink planted at the path is refused rather than followed.
//!
//! # References
//!  - [`open(2)`](https://man7.org/linux/man-pages/man2/open.2.html)
//!  - [`mmap(2)`](https://man7.org/linux/man-pages/man2/mmap.2.html)

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

use super::{map_fd, Backing, Options, Segment};
use crate::error::{Error, Result};

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

fn open_flags(read_only: bool) -> OFlags {
    let rw = if read_only { OFlags::RDONLY } else { OFlags::RDWR };
    rw | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn open_err(call: &str, path: &Path, e: rustix::io::Errno) -> Error {
    if e == rustix::io::Errno::LOOP {
        // O_NOFOLLOW on a symlink.
        return Error::PermissionDenied {
            what: format!("{call}({}): is a symlink, refused", quoted(path)),
        };
    }
    Error::errno(call, quoted(path), e)
}

/// `open(path, O_CREAT|O_EXCL|O_RDWR|O_NOFOLLOW, mode)` + `ftruncate(size)` + `mmap`.
pub(crate) fn create(path: &Path, size: usize, opts: &Options) -> Result<Segment> {
    let mode = Mode::from_raw_mode(opts.mode & 0o777);
    let (fd, created) =
        match rustix::fs::open(path, open_flags(false) | OFlags::CREATE | OFlags::EXCL, mode) {
            Ok(fd) => (fd, true),
            Err(rustix::io::Errno::EXIST) if opts.open_existing => (
                rustix::fs::open(path, open_flags(false), Mode::empty())
                    .map_err(|e| open_err("open", path, e))?,
                false,
            ),
            Err(e) => return Err(open_err("open", path, e)),
        };
    let cleanup = |e: Error| {
        if created {
            let _ = std::fs::remove_file(path);
        }
        e
    };
    if created {
        rustix::fs::fchmod(&fd, mode)
            .map_err(|e| cleanup(Error::errno("fchmod", quoted(path), e)))?;
        super::apply_group(&fd, opts.group, &quoted(path)).map_err(cleanup)?;
        super::posix::allocate(&fd, size as u64, &path.display().to_string()).map_err(cleanup)?;
    }
    let len = regular_len(&fd, path)?;
    if len < size {
        return Err(Error::incompatible("file size", len, format!("at least {size}")));
    }
    let base =
        map_fd(&fd, len, opts.read_only, opts.address_hint, &quoted(path)).map_err(cleanup)?;
    if created {
        super::registry::register(path);
    }
    let backing = Backing::File { path: path.to_path_buf(), fd };
    Ok(Segment::from_parts(base, len, backing, created, opts.read_only))
}

/// `open(path, O_RDWR|O_NOFOLLOW)` + `fstat` + `mmap` of the whole file.
pub(crate) fn open(path: &Path, opts: &Options) -> Result<Segment> {
    let fd = rustix::fs::open(path, open_flags(opts.read_only), Mode::empty())
        .map_err(|e| open_err("open", path, e))?;
    let len = regular_len(&fd, path)?;
    let base = map_fd(&fd, len, opts.read_only, opts.address_hint, &quoted(path))?;
    let backing = Backing::File { path: path.to_path_buf(), fd };
    Ok(Segment::from_parts(base, len, backing, false, opts.read_only))
}

fn regular_len(fd: &OwnedFd, path: &Path) -> Result<usize> {
    let size = || {
        let st = rustix::fs::fstat(fd).map_err(|e| Error::errno("fstat", quoted(path), e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::InvalidArgument(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Ok(st.st_size)
    };
    super::wait_sized(size, &format!("file {}", path.display()))
}

/// `unlink(path)` if the path still names the file `fd` has open.
pub(crate) fn unlink_if_same(path: &Path, fd: &OwnedFd) -> Result<()> {
    let Ok(current) =
        rustix::fs::open(path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
    else {
        return Ok(());
    };
    if super::posix::same_inode(fd.as_fd(), current.as_fd()) {
        std::fs::remove_file(path).map_err(|e| Error::io("unlink", quoted(path), e))?;
        super::registry::unregister(path);
    }
    Ok(())
}
