//! POSIX named shared memory: `shm_open`, `ftruncate`, `mmap(MAP_SHARED)`, `shm_unlink`.
//!
//! # References
//!  - [`shm_open(3)`](https://man7.org/linux/man-pages/man3/shm_open.3.html)
//!  - [`shm_overview(7)`](https://man7.org/linux/man-pages/man7/shm_overview.7.html)

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::Mode;
use rustix::shm::OFlags;

use super::{map_fd, Backing, Options, Segment};
use crate::error::{Error, Result};

/// Longest POSIX shared-memory name, in bytes, including the leading `/`.
pub const NAME_MAX: usize = 255;

/// Checks a POSIX shared-memory name: one leading `/`, at least one more byte, no
/// other `/`, no NUL, at most [`NAME_MAX`] bytes, and not `/.` or `/..`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidArgument(format!("POSIX shm name {name:?}: {why}")));
    let Some(rest) = name.strip_prefix('/') else {
        return bad("must start with '/'");
    };
    if rest.is_empty() {
        return bad("is empty after the '/'");
    }
    if rest.contains('/') {
        return bad("must not contain '/' after the first character");
    }
    if rest.contains('\0') {
        return bad("must not contain a NUL byte");
    }
    if name.len() > NAME_MAX {
        return bad(&format!("is {} bytes long, the limit is {NAME_MAX}", name.len()));
    }
    if rest == "." || rest == ".." {
        return bad("names a directory");
    }
    Ok(())
}

fn quoted(name: &str) -> String {
    format!("{name:?}")
}

/// `shm_open(name, O_CREAT|O_EXCL|O_RDWR, mode)` + `ftruncate(size)` + `mmap`.
pub(crate) fn create(name: &str, size: usize, opts: &Options) -> Result<Segment> {
    validate_name(name)?;
    let mode = Mode::from_raw_mode(opts.mode & 0o777);
    let (fd, created) =
        match rustix::shm::open(name, OFlags::CREATE | OFlags::EXCL | OFlags::RDWR, mode) {
            Ok(fd) => (fd, true),
            Err(rustix::io::Errno::EXIST) if opts.open_existing => (
                rustix::shm::open(name, OFlags::RDWR, Mode::empty())
                    .map_err(|e| Error::errno("shm_open", quoted(name), e))?,
                false,
            ),
            Err(e) => return Err(Error::errno("shm_open", quoted(name), e)),
        };
    let cleanup = |e: Error| {
        if created {
            let _ = rustix::shm::unlink(name);
        }
        e
    };
    if created {
        // The umask filtered the mode; the caller asked for exactly this one.
        rustix::fs::fchmod(&fd, mode)
            .map_err(|e| cleanup(Error::errno("fchmod", quoted(name), e)))?;
        super::apply_group(&fd, opts.group, &quoted(name)).map_err(cleanup)?;
        allocate(&fd, size as u64, name).map_err(cleanup)?;
    }
    let len = existing_len(&fd, name)?;
    if len < size {
        return Err(Error::incompatible("segment size", len, format!("at least {size}")));
    }
    let base =
        map_fd(&fd, len, opts.read_only, opts.address_hint, &quoted(name)).map_err(cleanup)?;
    let backing = Backing::Posix { name: name.to_string(), fd };
    Ok(Segment::from_parts(base, len, backing, created, opts.read_only))
}

/// Sizes a new shared-memory object and makes sure its pages exist, so that a full
/// `/dev/shm` is an `ENOSPC` now rather than a SIGBUS on first touch later.
pub(crate) fn allocate(fd: &OwnedFd, size: u64, what: &str) -> Result<()> {
    rustix::fs::ftruncate(fd, size).map_err(|e| Error::errno("ftruncate", quoted(what), e))?;
    match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        // Some filesystems cannot preallocate; the size is set, which is what matters.
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => Ok(()),
        Err(e) => Err(Error::errno("fallocate", quoted(what), e)),
    }
}

/// `shm_open(name, O_RDWR or O_RDONLY)` + `fstat` + `mmap` of the whole object.
pub(crate) fn open(name: &str, opts: &Options) -> Result<Segment> {
    validate_name(name)?;
    let flags = if opts.read_only { OFlags::RDONLY } else { OFlags::RDWR };
    let fd = rustix::shm::open(name, flags, Mode::empty())
        .map_err(|e| Error::errno("shm_open", quoted(name), e))?;
    let len = existing_len(&fd, name)?;
    let base = map_fd(&fd, len, opts.read_only, opts.address_hint, &quoted(name))?;
    let backing = Backing::Posix { name: name.to_string(), fd };
    Ok(Segment::from_parts(base, len, backing, false, opts.read_only))
}

fn existing_len(fd: &OwnedFd, name: &str) -> Result<usize> {
    let size = || {
        let st = rustix::fs::fstat(fd).map_err(|e| Error::errno("fstat", quoted(name), e))?;
        Ok(st.st_size)
    };
    super::wait_sized(size, &format!("POSIX shm {name:?}"))
}

/// `shm_unlink(name)`, only if the name still refers to the object `fd` has open (so a
/// segment re-created under the same name by someone else is left alone).
pub(crate) fn unlink_if_same(name: &str, fd: &OwnedFd) -> Result<()> {
    let Ok(current) = rustix::shm::open(name, OFlags::RDONLY, Mode::empty()) else {
        return Ok(()); // already gone
    };
    if same_inode(fd.as_fd(), current.as_fd()) {
        rustix::shm::unlink(name).map_err(|e| Error::errno("shm_unlink", quoted(name), e))?;
    }
    Ok(())
}

/// `shm_unlink(name)`.
pub fn unlink(name: &str) -> Result<()> {
    validate_name(name)?;
    rustix::shm::unlink(name).map_err(|e| Error::errno("shm_unlink", quoted(name), e))
}

pub(crate) fn same_inode(a: std::os::fd::BorrowedFd<'_>, b: std::os::fd::BorrowedFd<'_>) -> bool {
    match (rustix::fs::fstat(a), rustix::fs::fstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_names_are_validated() {
        assert!(validate_name("/shmkit.ok").is_ok());
        for bad in ["", "/", "noslash", "/a/b", "/.", "/..", "/nul\0"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("/{}", "x".repeat(NAME_MAX));
        assert!(validate_name(&long).unwrap_err().to_string().contains("limit is 255"));
        assert!(validate_name(&long[..NAME_MAX]).is_ok());
    }
}
