//! Where shared bytes come from: one mapped region and how it is named and backed.
//!
//! A [`Segment`] is a mapping of one shared object into this process. Four kinds exist:
//!
//! | kind | named by | created with |
//! |------|----------|--------------|
//! | [`Kind::SysV`]  | a `key_t` (often from [`sysv::ftok`]) or a shmid | `shmget` + `shmat` |
//! | [`Kind::Posix`] | `/name` under `/dev/shm` | `shm_open` + `ftruncate` + `mmap` |
//! | [`Kind::Memfd`] | nothing: the fd is passed over a unix socket | `memfd_create` + seals |
//! | [`Kind::File`]  | a path | `open` + `ftruncate` + `mmap` |
//!
//! Creation is exclusive and mode `0600` unless [`Options`] says otherwise. The creator
//! owns removal: dropping a created segment detaches *and removes* it, unless
//! [`Segment::persist`] was called. Opened segments are only detached on drop.
//!
//! The segment is mapped at a different virtual address in every process, so nothing
//! stored in it may be a pointer: see the crate's layout rules.

pub mod file;
pub(crate) mod lease;
pub mod memfd;
pub mod posix;
pub mod registry;
pub mod sysv;

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// The kinds of shared-memory object shmkit can map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Kind {
    /// System V shared memory (`shmget`).
    SysV,
    /// POSIX named shared memory (`shm_open`), a file in `/dev/shm`.
    #[default]
    Posix,
    /// An anonymous `memfd`, shared by passing its descriptor.
    Memfd,
    /// A regular file mapped `MAP_SHARED`.
    File,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::SysV => "sysv",
            Kind::Posix => "posix",
            Kind::Memfd => "memfd",
            Kind::File => "file",
        })
    }
}

/// How to find a named segment: the library form of the CLI's targets.
///
/// Parses and prints as `sysv:0x2a00c172`, `sysv-id:32769`, `posix:/name`,
/// `file:PATH` and `ftok:PATH:42` (resolved to a SysV key when used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// A System V key. Key 0 (`IPC_PRIVATE`) cannot be looked up and is refused.
    SysVKey(i32),
    /// A System V shmid, as listed by `ipcs -m`.
    SysVId(i32),
    /// A System V key derived by `ftok(path, proj_id)`.
    Ftok(PathBuf, u8),
    /// A POSIX shared-memory name: one leading `/`, no other `/`.
    Posix(String),
    /// A regular file.
    File(PathBuf),
}

impl Name {
    /// The segment kind this name refers to.
    pub fn kind(&self) -> Kind {
        match self {
            Name::SysVKey(_) | Name::SysVId(_) | Name::Ftok(..) => Kind::SysV,
            Name::Posix(_) => Kind::Posix,
            Name::File(_) => Kind::File,
        }
    }

    /// Resolves `ftok` names to their key; other names are returned as they are.
    pub fn resolve(&self) -> Result<Name> {
        match self {
            Name::Ftok(path, proj) => Ok(Name::SysVKey(sysv::ftok(path, *proj)?)),
            other => Ok(other.clone()),
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::SysVKey(key) => write!(f, "sysv:0x{:08x}", *key as u32),
            Name::SysVId(id) => write!(f, "sysv-id:{id}"),
            Name::Ftok(path, proj) => write!(f, "ftok:{}:{proj}", path.display()),
            Name::Posix(name) => write!(f, "posix:{name}"),
            Name::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// Why a target string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target {input:?}: {reason} (expected sysv:0xKEY, sysv-id:ID, posix:/NAME, file:PATH or ftok:PATH:PROJ)")]
pub struct ParseNameError {
    input: String,
    reason: String,
}

impl FromStr for Name {
    type Err = ParseNameError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let fail =
            |reason: &str| ParseNameError { input: s.to_string(), reason: reason.to_string() };
        let (scheme, rest) = s.split_once(':').ok_or_else(|| fail("missing `kind:` prefix"))?;
        match scheme {
            "sysv" => {
                let key = parse_key(rest).ok_or_else(|| fail("the key is not a 32-bit number"))?;
                if key == 0 {
                    return Err(fail("key 0 is IPC_PRIVATE and names no segment"));
                }
                Ok(Name::SysVKey(key))
            }
            "sysv-id" => {
                let id = rest.parse::<i32>().map_err(|_| fail("the shmid is not a number"))?;
                if id < 0 {
                    return Err(fail("the shmid is negative"));
                }
                Ok(Name::SysVId(id))
            }
            "posix" => {
                posix::validate_name(rest).map_err(|e| fail(&e.to_string()))?;
                Ok(Name::Posix(rest.to_string()))
            }
            "file" if !rest.is_empty() => Ok(Name::File(PathBuf::from(rest))),
            "file" => Err(fail("the path is empty")),
            "ftok" => {
                let (path, proj) = rest.rsplit_once(':').ok_or_else(|| fail("missing `:PROJ`"))?;
                let proj = parse_u64(proj)
                    .filter(|p| (1..=255).contains(p))
                    .ok_or_else(|| fail("the project id must be 1..=255"))?;
                if path.is_empty() {
                    return Err(fail("the path is empty"));
                }
                Ok(Name::Ftok(PathBuf::from(path), proj as u8))
            }
            _ => Err(fail("unknown kind")),
        }
    }
}

/// Parses `0x2a00c172`, `42` or `-1` as a SysV key (the bits of a `key_t`).
pub fn parse_key(s: &str) -> Option<i32> {
    if let Some(neg) = s.strip_prefix('-') {
        return neg.parse::<i32>().ok().map(|v| -v);
    }
    parse_u64(s).filter(|&v| v <= u32::MAX as u64).map(|v| v as u32 as i32)
}

/// Parses a decimal, `0x` hexadecimal or `0o` octal unsigned number.
pub fn parse_u64(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = s.strip_prefix("0o") {
        u64::from_str_radix(oct, 8).ok()
    } else {
        s.parse().ok()
    }
}

/// How a segment is created or opened.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Permission bits for a new object (default `0o600`). Applied exactly, not
    /// filtered by the umask.
    pub mode: u32,
    /// Open the object if it already exists instead of failing with
    /// [`Error::AlreadyExists`] (default `false`: creation is exclusive).
    pub open_existing: bool,
    /// Map read-only (default `false`).
    pub read_only: bool,
    /// Preferred mapping address (a hint, never `MAP_FIXED`): lets a test force two
    /// processes to map the same object at different addresses.
    pub address_hint: Option<usize>,
    /// Group of a new object (`fchown(fd, -1, gid)`; SysV: `shmctl(IPC_SET)`), so that a
    /// mode such as `0o660` shares it with that group's users. `None`: the creator's
    /// effective group. The creator must be a member (or root).
    pub group: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: 0o600,
            open_existing: false,
            read_only: false,
            address_hint: None,
            group: None,
        }
    }
}

/// `fchown(fd, -1, group)` of a new object, if a group was asked for.
pub(crate) fn apply_group(fd: &OwnedFd, group: Option<u32>, what: &str) -> Result<()> {
    if let Some(gid) = group {
        rustix::fs::fchown(fd, None, Some(rustix::fs::Gid::from_raw(gid)))
            .map_err(|e| Error::errno("fchown", format!("{what} to group {gid}"), e))?;
    }
    Ok(())
}

/// What the backing object is; holds the descriptor or id that keeps it reachable.
#[derive(Debug)]
pub(crate) enum Backing {
    SysV { key: i32, id: i32 },
    Posix { name: String, fd: OwnedFd },
    Memfd { fd: OwnedFd },
    File { path: PathBuf, fd: OwnedFd },
}

impl Backing {
    /// The object's descriptor (SysV segments have none).
    pub(crate) fn fd(&self) -> Option<&OwnedFd> {
        match self {
            Backing::SysV { .. } => None,
            Backing::Posix { fd, .. } | Backing::Memfd { fd } | Backing::File { fd, .. } => {
                Some(fd)
            }
        }
    }
}

/// One shared-memory object mapped into this process.
///
/// The mapping stays valid until the segment is dropped. The bytes it covers can be
/// changed at any time by other processes: read them through atomics or raw-pointer
/// copies, never through references (see the crate's layout rules).
#[derive(Debug)]
pub struct Segment {
    base: NonNull<u8>,
    len: usize,
    backing: Backing,
    /// Remove the object when dropped (the creator does, unless persisted).
    owned: AtomicBool,
    read_only: bool,
}

// SAFETY: a Segment is a mapping plus an fd/id; neither is tied to the creating thread,
// and all access to the shared bytes goes through raw pointers or atomics.
unsafe impl Send for Segment {}
// SAFETY: &Segment only hands out the raw base pointer and metadata.
unsafe impl Sync for Segment {}

impl Segment {
    pub(crate) fn from_parts(
        base: NonNull<u8>,
        len: usize,
        backing: Backing,
        owned: bool,
        read_only: bool,
    ) -> Segment {
        if let Some(fd) = backing.fd() {
            lease::register(base.as_ptr(), len, fd.as_raw_fd());
        }
        Segment { base, len, backing, owned: AtomicBool::new(owned), read_only }
    }

    /// Creates a named segment of `size` bytes (zero-filled) and maps it.
    ///
    /// Exclusive unless `opts.open_existing`; an existing object then is opened as it
    /// is and must be at least `size` bytes.
    pub fn create(name: &Name, size: usize, opts: &Options) -> Result<Segment> {
        check_size(size)?;
        match name.resolve()? {
            Name::SysVKey(key) => sysv::create(key, size, opts),
            Name::SysVId(_) => Err(Error::InvalidArgument(
                "a segment cannot be created by shmid; give a key".into(),
            )),
            Name::Posix(n) => posix::create(&n, size, opts),
            Name::File(path) => file::create(&path, size, opts),
            Name::Ftok(..) => unreachable!("resolve() turns ftok names into keys"),
        }
    }

    /// Opens and maps an existing named segment at its full size.
    pub fn open(name: &Name, opts: &Options) -> Result<Segment> {
        match name.resolve()? {
            Name::SysVKey(key) => sysv::open_key(key, opts),
            Name::SysVId(id) => sysv::open_id(id, opts),
            Name::Posix(n) => posix::open(&n, opts),
            Name::File(path) => file::open(&path, opts),
            Name::Ftok(..) => unreachable!("resolve() turns ftok names into keys"),
        }
    }

    /// Creates an anonymous, sealed memfd segment; share it with [`Segment::send_fd`].
    pub fn create_memfd(debug_name: &str, size: usize) -> Result<Segment> {
        check_size(size)?;
        memfd::create(debug_name, size)
    }

    /// Removes the object on drop (the default for the creator); see [`Segment::persist`].
    pub fn set_owned(&self, owned: bool) {
        self.owned.store(owned, Ordering::Relaxed);
    }

    /// Keeps the object after this segment is dropped (a created segment is removed
    /// on drop otherwise).
    pub fn persist(&self) {
        self.set_owned(false);
    }

    /// Whether dropping this segment removes the object.
    pub fn is_owned(&self) -> bool {
        self.owned.load(Ordering::Relaxed)
    }

    /// Mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: empty segments cannot be created or mapped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the mapping is read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Base address of the mapping in *this* process (other processes see the same
    /// bytes at another address).
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The kind of backing object.
    pub fn kind(&self) -> Kind {
        match self.backing {
            Backing::SysV { .. } => Kind::SysV,
            Backing::Posix { .. } => Kind::Posix,
            Backing::Memfd { .. } => Kind::Memfd,
            Backing::File { .. } => Kind::File,
        }
    }

    /// The name another process can open this segment by (`None` for memfd).
    /// SysV segments are named by key, or by shmid when the key is `IPC_PRIVATE`.
    pub fn name(&self) -> Option<Name> {
        match &self.backing {
            Backing::SysV { key: 0, id } => Some(Name::SysVId(*id)),
            Backing::SysV { key, .. } => Some(Name::SysVKey(*key)),
            Backing::Posix { name, .. } => Some(Name::Posix(name.clone())),
            Backing::Memfd { .. } => None,
            Backing::File { path, .. } => Some(Name::File(path.clone())),
        }
    }

    /// The SysV shmid, for SysV segments.
    pub fn sysv_id(&self) -> Option<i32> {
        match self.backing {
            Backing::SysV { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Sends the descriptor of a memfd (or POSIX/file) segment over a connected unix
    /// socket (`SCM_RIGHTS`), together with its size.
    pub fn send_fd(&self, socket: &impl std::os::fd::AsFd) -> Result<()> {
        let fd = match &self.backing {
            Backing::Memfd { fd } | Backing::Posix { fd, .. } | Backing::File { fd, .. } => fd,
            Backing::SysV { .. } => {
                return Err(Error::InvalidArgument(
                    "a SysV segment has no descriptor to send".into(),
                ))
            }
        };
        memfd::send_fd(socket, fd, self.len as u64)
    }

    /// Receives a memfd segment sent with [`Segment::send_fd`]; verifies that it is a
    /// memfd sealed against shrinking and growing, and that its size is what was sent.
    pub fn recv_memfd(socket: &impl std::os::fd::AsFd) -> Result<Segment> {
        memfd::recv(socket)
    }

    /// What the CLI shows about the segment.
    pub fn describe(&self) -> Result<Description> {
        let mut d = match &self.backing {
            Backing::SysV { id, .. } => sysv::describe(*id)?,
            Backing::Posix { fd, name } => describe_fd(fd, name)?,
            Backing::Memfd { fd } => describe_fd(fd, "memfd")?,
            Backing::File { fd, path } => describe_fd(fd, &path.display().to_string())?,
        };
        d.kind = self.kind();
        d.name = self.name().map_or_else(|| "memfd".to_string(), |n| n.to_string());
        Ok(d)
    }

    /// Removes the object now (`IPC_RMID`, `shm_unlink` or `unlink`). The mapping stays
    /// valid until the segment is dropped; processes that have it mapped keep it.
    pub fn remove(&self) -> Result<()> {
        self.set_owned(false);
        match &self.backing {
            Backing::SysV { id, .. } => sysv::remove(*id),
            Backing::Posix { name, fd } => posix::unlink_if_same(name, fd),
            Backing::File { path, fd } => file::unlink_if_same(path, fd),
            Backing::Memfd { .. } => Ok(()),
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Leases end with the mapping their records are in (before the fd closes).
        if self.backing.fd().is_some() {
            lease::unregister(self.base.as_ptr());
        }
        if self.is_owned() {
            // Errors cannot be reported from drop; a leftover object is found by `shmkit gc`.
            let _ = self.remove();
        }
        match self.backing {
            Backing::SysV { .. } => sysv::detach(self.base),
            _ => {
                // SAFETY: base/len describe a mapping this segment made and still owns;
                // no reference into it outlives the segment.
                let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
            }
        }
    }
}

/// The CLI's view of a segment.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Description {
    pub kind: Kind,
    pub name: String,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Creator pid, where the OS records it (SysV).
    pub creator_pid: Option<u32>,
    /// Last pid to attach or detach, where the OS records it (SysV).
    pub last_pid: Option<u32>,
    /// Number of attached processes, where the OS knows it (SysV).
    pub attach_count: Option<u64>,
    /// Marked for destruction once the last process detaches (SysV).
    pub removed: bool,
    /// Last modification (POSIX, file) or change (SysV) time, Unix seconds.
    pub changed: i64,
}

fn describe_fd(fd: &OwnedFd, what: &str) -> Result<Description> {
    let st = rustix::fs::fstat(fd).map_err(|e| Error::errno("fstat", what, e))?;
    Ok(Description {
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        changed: st.st_mtime,
        ..Description::default()
    })
}

fn check_size(size: usize) -> Result<()> {
    if size == 0 {
        return Err(Error::InvalidArgument("a segment needs a size of at least 1 byte".into()));
    }
    if size > isize::MAX as usize {
        return Err(Error::TooLarge { len: size as u64, max: isize::MAX as u64 });
    }
    Ok(())
}

/// Maps `len` bytes of `fd` shared, read-write unless `read_only`.
pub(crate) fn map_fd(
    fd: &OwnedFd,
    len: usize,
    read_only: bool,
    hint: Option<usize>,
    what: &str,
) -> Result<NonNull<u8>> {
    use rustix::mm::{MapFlags, ProtFlags};
    let prot = if read_only { ProtFlags::READ } else { ProtFlags::READ | ProtFlags::WRITE };
    let hint = hint.map_or(std::ptr::null_mut(), |a| a as *mut std::ffi::c_void);
    // SAFETY: a fresh MAP_SHARED mapping without MAP_FIXED cannot overlap any existing
    // mapping, so it invalidates no Rust memory; the caller has checked `len` against
    // the object's size.
    let ptr = unsafe { rustix::mm::mmap(hint, len, prot, MapFlags::SHARED, fd, 0) }
        .map_err(|e| Error::errno("mmap", what, e))?;
    NonNull::new(ptr.cast()).ok_or_else(|| Error::corrupt("mmap returned a null mapping"))
}

/// The size of an object an opener found: `size` (from `fstat`) until it is not 0, for
/// at most [`crate::layout::OPEN_TIMEOUT`]. A creator makes a POSIX object or a file
/// and *then* sizes it, so an opener that comes in between sees 0 bytes; it waits, as
/// it waits for a header that is still being initialised. An object that stays empty
/// is an error.
pub(crate) fn wait_sized(mut size: impl FnMut() -> Result<i64>, what: &str) -> Result<usize> {
    let start = std::time::Instant::now();
    loop {
        let n = size()?;
        if n != 0 || start.elapsed() >= crate::layout::OPEN_TIMEOUT {
            return checked_len(n, what);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Checks that an object's size (from `fstat`/`IPC_STAT`) can be mapped.
pub(crate) fn checked_len(size: i64, what: &str) -> Result<usize> {
    if size <= 0 {
        return Err(Error::InvalidArgument(format!("{what} is empty (0 bytes): nothing to map")));
    }
    usize::try_from(size).map_err(|_| Error::TooLarge { len: size as u64, max: usize::MAX as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_round_trip() {
        for s in [
            "sysv:0x2a00c172",
            "sysv-id:32769",
            "posix:/shmkit.x",
            "file:/tmp/a:b",
            "ftok:/tmp/example:42",
        ] {
            let n: Name = s.parse().unwrap();
            assert_eq!(n.to_string(), s);
        }
        assert_eq!("sysv:42".parse::<Name>().unwrap(), Name::SysVKey(42));
        assert_eq!("sysv:0xffffffff".parse::<Name>().unwrap(), Name::SysVKey(-1));
    }

    #[test]
    fn bad_targets_are_refused_with_a_reason() {
        for s in [
            "",
            "posix",
            "posix:x",
            "posix:/a/b",
            "sysv:0",
            "sysv:zz",
            "sysv:0x1ffffffff",
            "sysv-id:-3",
            "ftok:/tmp:0",
            "ftok:/tmp:256",
            "ftok:/tmp",
            "file:",
            "tcp:1",
        ] {
            let err = s.parse::<Name>().unwrap_err();
            assert!(err.to_string().contains("invalid target"), "{s}: {err}");
        }
    }
}
