//! System V shared memory: `ftok`, `shmget`, `shmat`, `shmdt`, `shmctl`.
//!
//! Neither rustix nor nix wraps these calls, so this module is the one place that calls
//! them through `libc`.
//!
//! # References
//!  - [`shmget(2)`](https://man7.org/linux/man-pages/man2/shmget.2.html)
//!  - [`shmop(2)`](https://man7.org/linux/man-pages/man2/shmop.2.html) (`shmat`, `shmdt`)
//!  - [`shmctl(2)`](https://man7.org/linux/man-pages/man2/shmctl.2.html)
//!  - [`ftok(3)`](https://man7.org/linux/man-pages/man3/ftok.3.html)

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

use super::{Backing, Description, Kind, Options, Segment};
use crate::error::{Error, Result};

/// `ftok(path, proj_id)`: derives a SysV key from an existing file's inode and device.
///
/// Two processes that call it with the same path and id get the same key. The file
/// must exist; `proj_id` must not be 0 (only its low 8 bits are used).
pub fn ftok(path: &Path, proj_id: u8) -> Result<i32> {
    if proj_id == 0 {
        return Err(Error::InvalidArgument("ftok: the project id must not be 0".into()));
    }
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let key = unsafe { libc::ftok(c.as_ptr(), i32::from(proj_id)) };
    if key == -1 {
        return Err(Error::last_os("ftok", format!("{:?}, {proj_id}", path.display().to_string())));
    }
    Ok(key)
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path {} contains a NUL byte", path.display())))
}

fn key_str(key: i32) -> String {
    format!("0x{:08x}", key as u32)
}

/// `shmget(key, size, flags)`.
fn shmget(key: i32, size: usize, flags: i32) -> Result<i32> {
    // SAFETY: shmget takes no pointers.
    let id = unsafe { libc::shmget(key, size, flags) };
    if id == -1 {
        return Err(Error::last_os("shmget", key_str(key)));
    }
    Ok(id)
}

/// `shmget(key, size, IPC_CREAT[|IPC_EXCL] | mode)` then `shmat`: creates a zero-filled
/// segment (exclusively unless `opts.open_existing`).
pub(crate) fn create(key: i32, size: usize, opts: &Options) -> Result<Segment> {
    let mode = (opts.mode & 0o777) as i32;
    let (id, created) = match shmget(key, size, libc::IPC_CREAT | libc::IPC_EXCL | mode) {
        Ok(id) => (id, true),
        Err(Error::AlreadyExists { .. }) if opts.open_existing => (shmget(key, 0, 0)?, false),
        Err(e) => return Err(e),
    };
    if let (true, Some(gid)) = (created, opts.group) {
        set_group(id, gid).inspect_err(|_| {
            let _ = remove(id);
        })?;
    }
    let st = stat(id)?;
    if st.size < size as u64 {
        return Err(Error::incompatible("segment size", st.size, format!("at least {size}")));
    }
    let seg = attach(key, id, st.size, opts).inspect_err(|_| {
        if created {
            let _ = remove(id);
        }
    })?;
    seg.set_owned(created);
    Ok(seg)
}

/// `shmctl(id, IPC_SET)` with the segment's group changed to `gid`.
fn set_group(id: i32, gid: u32) -> Result<()> {
    // SAFETY: shmid_ds is a plain C struct for which all-zero is valid.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: a valid shmid_ds for IPC_STAT to fill, then for IPC_SET to read.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return Err(Error::last_os("shmctl(IPC_STAT)", format!("shmid {id}")));
    }
    ds.shm_perm.gid = gid;
    // SAFETY: as above.
    if unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) } < 0 {
        return Err(Error::last_os("shmctl(IPC_SET)", format!("shmid {id} to group {gid}")));
    }
    Ok(())
}

/// Opens the segment with `key` at its full size.
pub(crate) fn open_key(key: i32, opts: &Options) -> Result<Segment> {
    let id = shmget(key, 0, 0)?;
    let st = stat(id)?;
    attach(key, id, st.size, opts)
}

/// Opens the segment with shmid `id` at its full size.
pub(crate) fn open_id(id: i32, opts: &Options) -> Result<Segment> {
    let st = stat(id)?;
    attach(st.key, id, st.size, opts)
}

fn attach(key: i32, id: i32, size: u64, opts: &Options) -> Result<Segment> {
    let len = super::checked_len(size as i64, &format!("SysV segment {id}"))?;
    let flags = if opts.read_only { libc::SHM_RDONLY } else { 0 };
    let hint = opts.address_hint.map_or(std::ptr::null(), |a| a as *const libc::c_void);
    // A hint must be SHMLBA-aligned or shmat fails; round it down (it is only a hint).
    let hint = (hint as usize & !(page_size() - 1)) as *const libc::c_void;
    // SAFETY: shmat without SHM_REMAP never replaces an existing mapping; the address is
    // a hint checked by the kernel.
    let ptr = unsafe { libc::shmat(id, hint, flags) };
    if ptr as isize == -1 {
        return Err(Error::last_os("shmat", format!("shmid {id}")));
    }
    let base =
        NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::corrupt("shmat returned null"))?;
    Ok(Segment::from_parts(base, len, Backing::SysV { key, id }, false, opts.read_only))
}

fn page_size() -> usize {
    rustix::param::page_size()
}

/// `shmdt(addr)`.
pub(crate) fn detach(base: NonNull<u8>) {
    // SAFETY: `base` is the address shmat returned and the segment owning it is being
    // dropped, so nothing refers into the mapping any more.
    unsafe { libc::shmdt(base.as_ptr().cast()) };
}

/// `shmctl(id, IPC_RMID)`: marks the segment for destruction; it disappears when the
/// last process detaches, and its key is free at once.
pub fn remove(id: i32) -> Result<()> {
    // SAFETY: IPC_RMID ignores the buffer argument.
    let rc = unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    if rc == -1 {
        return Err(Error::last_os("shmctl(IPC_RMID)", format!("shmid {id}")));
    }
    Ok(())
}

/// What `shmctl(IPC_STAT)` says about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Stat {
    pub key: i32,
    pub id: i32,
    pub size: u64,
    /// Permission bits plus `SHM_DEST` (0o1000) and `SHM_LOCKED` (0o2000).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    pub cpid: u32,
    pub lpid: u32,
    pub nattch: u64,
    pub atime: i64,
    pub dtime: i64,
    pub ctime: i64,
}

/// `SHM_DEST` in [`Stat::mode`]: removed, waiting for the last detach.
pub const MODE_DEST: u32 = 0o1000;
/// `SHM_LOCKED` in [`Stat::mode`].
pub const MODE_LOCKED: u32 = 0o2000;

/// `shmctl(id, IPC_STAT)`.
pub fn stat(id: i32) -> Result<Stat> {
    // SAFETY: shmid_ds is plain old data; all-zero is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a valid, writable shmid_ds.
    let rc = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) };
    if rc == -1 {
        return Err(Error::last_os("shmctl(IPC_STAT)", format!("shmid {id}")));
    }
    Ok(Stat {
        key: ds.shm_perm.__key,
        id,
        size: ds.shm_segsz as u64,
        mode: u32::from(ds.shm_perm.mode),
        uid: ds.shm_perm.uid,
        gid: ds.shm_perm.gid,
        cuid: ds.shm_perm.cuid,
        cgid: ds.shm_perm.cgid,
        cpid: ds.shm_cpid as u32,
        lpid: ds.shm_lpid as u32,
        nattch: ds.shm_nattch as u64,
        atime: ds.shm_atime,
        dtime: ds.shm_dtime,
        ctime: ds.shm_ctime,
    })
}

pub(crate) fn describe(id: i32) -> Result<Description> {
    let st = stat(id)?;
    Ok(Description {
        kind: Kind::SysV,
        size: st.size,
        mode: st.mode & 0o777,
        uid: st.uid,
        gid: st.gid,
        creator_pid: Some(st.cpid),
        last_pid: Some(st.lpid),
        attach_count: Some(st.nattch),
        removed: st.mode & MODE_DEST != 0,
        changed: st.ctime,
        name: String::new(),
    })
}

/// Every SysV segment on the system, from `/proc/sysvipc/shm` (no attach, no side
/// effects): `key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime`.
pub fn list() -> Result<Vec<Stat>> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm")
        .map_err(|e| Error::io("read", "/proc/sysvipc/shm", e))?;
    Ok(text.lines().skip(1).filter_map(parse_proc_line).collect())
}

fn parse_proc_line(line: &str) -> Option<Stat> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 14 {
        return None;
    }
    let num = |i: usize| f[i].parse::<i64>().ok();
    Some(Stat {
        key: num(0)? as i32,
        id: num(1)? as i32,
        mode: u32::from_str_radix(f[2], 8).ok()?,
        size: f[3].parse().ok()?,
        cpid: num(4)? as u32,
        lpid: num(5)? as u32,
        nattch: num(6)? as u64,
        uid: num(7)? as u32,
        gid: num(8)? as u32,
        cuid: num(9)? as u32,
        cgid: num(10)? as u32,
        atime: num(11)?,
        dtime: num(12)?,
        ctime: num(13)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines_parse_including_negative_keys() {
        let line = "   -1234      32769  1600    4096  10  11  2  0  0  0  0  1  2  3  4096  0";
        let st = parse_proc_line(line).unwrap();
        assert_eq!(
            (st.key, st.id, st.mode, st.size, st.nattch, st.ctime),
            (-1234, 32769, 0o1600, 4096, 2, 3)
        );
        assert!(parse_proc_line("key shmid").is_none());
    }
}
