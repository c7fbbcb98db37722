//! Segments across real processes: each kind created in one process, opened, checked
//! and written in another; bad input gives typed errors, never a crash.

mod common;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;

use common::*;
use shmkit::layout::{self, ObjectKind, HEADER_SIZE};
use shmkit::segment::{memfd, sysv};
use shmkit::{Error, Name, Options, Segment};

const SIZE: usize = 64 * 1024;
const DATA: usize = 1024;

/// The peer side of every test in this file.
#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    match role.as_str() {
        // Open the segment, check the creator's pattern, write our own after it.
        "check-and-write" => {
            let name: Name = args[0].parse().unwrap();
            let seg = Segment::open(&name, &Options::default()).unwrap();
            let info = layout::validate(&seg).unwrap();
            assert_eq!(info.creator_pid.to_string(), args[1]);
            assert_eq!(read_at(&seg, DATA, 4096), pattern(1, 4096));
            write_at(&seg, DATA + 4096, &pattern(2, 4096));
            println!("peer:mapped at {:p}", seg.as_ptr());
        }
        // Say so, then open a segment that may still be empty and report its size.
        "open-len" => {
            let name: Name = args[0].parse().unwrap();
            println!("peer:ready");
            match Segment::open(&name, &Options::default()) {
                Ok(seg) => println!("peer:len {}", seg.len()),
                Err(e) => println!("peer:error {e}"),
            }
        }
        "ftok" => {
            let key = sysv::ftok(&PathBuf::from(&args[0]), 42).unwrap();
            println!("peer:{key}");
        }
        // Create a sealed memfd, write a pattern, pass the fd to the listener at args[0].
        "memfd-send" => {
            let seg = Segment::create_memfd("shmkit-test", SIZE).unwrap();
            write_at(&seg, 0, &pattern(7, SIZE));
            let sock = UnixStream::connect(&args[0]).unwrap();
            seg.send_fd(&sock).unwrap();
            // Wait until the receiver has mapped it (it closes the socket), then exit:
            // the memory must outlive its creator.
            let mut b = [0u8; 1];
            let _ = std::io::Read::read(&mut &sock, &mut b);
        }
        // As an unprivileged user: opening must be refused.
        "open-refused" => {
            let name: Name = args[0].parse().unwrap();
            match Segment::open(&name, &Options::default()) {
                Err(Error::PermissionDenied { .. }) => println!("peer:refused"),
                other => panic!("expected PermissionDenied, got {other:?}"),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn create_with_pattern(name: &Name) -> Segment {
    let seg = Segment::create(name, SIZE, &Options::default()).unwrap();
    let h = layout::init(&seg, ObjectKind::Raw, 2, &[HEADER_SIZE as u64]).unwrap();
    layout::publish(h);
    write_at(&seg, DATA, &pattern(1, 4096));
    seg
}

fn round_trip(name: Name) {
    let seg = create_with_pattern(&name);
    let out = run_peer("check-and-write", &[name.to_string(), std::process::id().to_string()]);
    assert_eq!(read_at(&seg, DATA + 4096, 4096), pattern(2, 4096), "{name}: peer's bytes not seen");
    let lines = peer_lines(&out);
    assert!(lines[0].starts_with("mapped at 0x"), "{lines:?}");
    drop(seg);
}

#[test]
fn posix_segment_is_shared_with_another_process_and_removed_on_drop() {
    let name = format!("/{}", unique("posix"));
    round_trip(Name::Posix(name.clone()));
    assert!(!posix_exists(&name), "{name} left behind");
}

#[test]
fn sysv_segment_is_shared_with_another_process_and_removed_on_drop() {
    let key = test_key();
    round_trip(Name::SysVKey(key));
    assert!(!sysv_key_exists(key), "key {key:#x} left behind");
}

#[test]
fn file_segment_is_shared_with_another_process_and_removed_on_drop() {
    let path = std::env::temp_dir().join(unique("file"));
    round_trip(Name::File(path.clone()));
    assert!(!path.exists(), "{} left behind", path.display());
}

#[test]
fn ftok_gives_the_same_key_in_both_processes_and_names_the_same_segment() {
    let path = std::env::temp_dir().join(unique("ftok"));
    std::fs::write(&path, b"").unwrap();
    let mine = sysv::ftok(&path, 42).unwrap();
    let out = run_peer("ftok", &[path.display().to_string()]);
    assert_eq!(peer_lines(&out), vec![mine.to_string()]);
    let name = Name::Ftok(path.clone(), 42);
    round_trip(name);
    assert!(!sysv_key_exists(mine));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn memfd_arrives_sealed_over_a_unix_socket_and_cannot_be_shrunk() {
    let path = std::env::temp_dir().join(unique("sock"));
    let listener = UnixListener::bind(&path).unwrap();
    let mut child = peer_command("memfd-send", &[path.display().to_string()]).spawn().unwrap();
    let (sock, _) = listener.accept().unwrap();
    let seg = Segment::recv_memfd(&sock).unwrap();
    drop(sock);
    assert!(child.wait().unwrap().success());
    std::fs::remove_file(&path).unwrap();
    assert_eq!(seg.len(), SIZE);
    let seals = memfd::seals(&seg).unwrap();
    assert!(seals.contains(memfd::SEALS), "{seals:?}");
    assert_eq!(read_at(&seg, 0, SIZE), pattern(7, SIZE), "bytes written by the exited creator");
    let fd = memfd::fd(&seg).unwrap();
    assert_eq!(
        rustix::fs::ftruncate(fd, 4096),
        Err(rustix::io::Errno::PERM),
        "shrink must be sealed"
    );
}

#[test]
fn memfd_without_seals_is_refused_by_the_receiver() {
    let (a, b) = UnixStream::pair().unwrap();
    let fd = rustix::fs::memfd_create("unsealed", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, 4096).unwrap();
    // Send an unsealed memfd by hand, the way a careless or hostile peer would.
    send_raw_fd(&a, &fd, 4096);
    match Segment::recv_memfd(&b) {
        Err(Error::Incompatible { field: "memfd seals", .. }) => {}
        other => panic!("expected Incompatible seals, got {other:?}"),
    }
}

fn send_raw_fd(sock: &UnixStream, fd: &std::os::fd::OwnedFd, size: u64) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsFd;
    let fds = [fd.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let bytes = size.to_ne_bytes();
    rustix::net::sendmsg(sock, &[std::io::IoSlice::new(&bytes)], &mut control, SendFlags::empty())
        .unwrap();
}

#[test]
fn creating_an_existing_name_is_already_exists_unless_open_existing() {
    let name = Name::Posix(format!("/{}", unique("excl")));
    let first = Segment::create(&name, 4096, &Options::default()).unwrap();
    match Segment::create(&name, 4096, &Options::default()) {
        Err(Error::AlreadyExists { what }) => assert!(what.contains("shm_open"), "{what}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let second =
        Segment::create(&name, 4096, &Options { open_existing: true, ..Options::default() })
            .unwrap();
    assert!(!second.is_owned(), "opening an existing segment must not take ownership");
    drop(second);
    drop(first);

    let key = test_key();
    let first = Segment::create(&Name::SysVKey(key), 4096, &Options::default()).unwrap();
    assert!(matches!(
        Segment::create(&Name::SysVKey(key), 4096, &Options::default()),
        Err(Error::AlreadyExists { .. })
    ));
    drop(first);
    assert!(!sysv_key_exists(key));
}

#[test]
fn posix_name_with_a_slash_inside_is_refused() {
    let name = Name::Posix("/shmkit/bad".into());
    match Segment::create(&name, 4096, &Options::default()) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("must not contain '/'"), "{msg}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn a_ten_byte_file_is_an_error_not_a_sigbus() {
    let path = std::env::temp_dir().join(unique("tiny"));
    std::fs::write(&path, b"0123456789").unwrap();
    let seg = Segment::open(&Name::File(path.clone()), &Options::default()).unwrap();
    assert_eq!(seg.len(), 10);
    match layout::validate(&seg) {
        Err(Error::Incompatible { field: "segment size", .. }) => {}
        other => panic!("expected Incompatible segment size, got {other:?}"),
    }
    drop(seg);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn an_empty_file_is_refused_with_a_clear_error() {
    let path = std::env::temp_dir().join(unique("empty"));
    std::fs::write(&path, b"").unwrap();
    let err = Segment::open(&Name::File(path.clone()), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_symlink_planted_at_a_file_path_is_refused() {
    let target = std::env::temp_dir().join(unique("victim"));
    std::fs::write(&target, vec![0u8; 4096]).unwrap();
    let link = std::env::temp_dir().join(unique("link"));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = Segment::open(&Name::File(link.clone()), &Options::default()).unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    let err = Segment::create(
        &Name::File(link.clone()),
        4096,
        &Options { open_existing: true, ..Options::default() },
    )
    .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_file(&target).unwrap();
}

/// Corrupts one header field of a fresh memfd segment and checks the error.
fn corrupted(field: impl Fn(&layout::Header)) -> Error {
    let seg = Segment::create_memfd("hdr", 8192).unwrap();
    let h = layout::init(&seg, ObjectKind::Raw, 1, &[]).unwrap();
    layout::publish(h);
    layout::validate(&seg).unwrap();
    field(h);
    layout::validate(&seg).unwrap_err()
}

#[test]
fn each_bad_header_field_gives_a_typed_error_naming_it() {
    let e = corrupted(|h| h.magic.store(0x1122_3344, Ordering::Relaxed));
    assert!(matches!(e, Error::Incompatible { field: "magic", .. }), "{e}");
    let e = corrupted(|h| h.version.store(99, Ordering::Relaxed));
    assert!(matches!(e, Error::Incompatible { field: "layout version", .. }), "{e}");
    let expected = format!("incompatible layout version: found 99, expected {}", layout::VERSION);
    assert_eq!(e.to_string(), expected);
    let e = corrupted(|h| h.total_size.store(1 << 40, Ordering::Relaxed));
    assert!(matches!(e, Error::Incompatible { field: "total size", .. }), "{e}");
    let e = corrupted(|h| h.header_size.store(64, Ordering::Relaxed));
    assert!(matches!(e, Error::Incompatible { field: "header size", .. }), "{e}");
    let e = corrupted(|h| h.object.store(77, Ordering::Relaxed));
    assert!(matches!(e, Error::Incompatible { field: "object kind", .. }), "{e}");
    let e = corrupted(|h| h.endpoint_count.store(u32::MAX, Ordering::Relaxed));
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    let e = corrupted(|h| h.state.store(1234, Ordering::Relaxed));
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    let e = corrupted(|h| h.state.store(layout::state::INITIALISING, Ordering::Relaxed));
    assert!(matches!(e, Error::NotReady { .. }), "{e}");
}

/// Root tests are compiled in only when the build ran as root (build.rs); running them
/// as another user means a stale build.
fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "built as root, run as uid {uid}: rebuild (cargo clean -p shmkit)");
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: runs a peer as another user")]
fn a_segment_created_0600_by_root_is_refused_to_an_unprivileged_user() {
    assert_root();
    let nobody = 65534;
    for name in [Name::Posix(format!("/{}", unique("perm"))), Name::SysVKey(test_key())] {
        let seg = Segment::create(&name, 4096, &Options::default()).unwrap();
        let mut cmd = peer_command("open-refused", &[name.to_string()]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        std::os::unix::process::CommandExt::uid(&mut cmd, nobody);
        std::os::unix::process::CommandExt::gid(&mut cmd, nobody);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(peer_lines(&out), vec!["refused"]);
        drop(seg);
    }
}

#[test]
fn creation_beyond_the_space_of_dev_shm_fails_with_enospc_not_a_later_sigbus() {
    // A request larger than the whole /dev/shm filesystem: fallocate refuses it at once
    // (a request between "free" and "total" would first allocate all the free memory).
    let vfs = rustix::fs::statvfs("/dev/shm").unwrap();
    let total = vfs.f_blocks * vfs.f_frsize;
    let name = Name::Posix(format!("/{}", unique("enospc")));
    let err =
        Segment::create(&name, (total + (1 << 20)) as usize, &Options::default()).unwrap_err();
    assert!(err.to_string().contains("no space left on device"), "{err}");
    assert!(err.to_string().contains("fallocate"), "{err}");
    assert!(
        !posix_exists(&name.to_string()["posix:".len()..]),
        "a failed creation leaves nothing behind"
    );
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: mounts a small tmpfs")]
fn a_file_segment_on_a_full_filesystem_fails_at_creation() {
    assert_root();
    let dir = std::env::temp_dir().join(unique("tinyfs"));
    std::fs::create_dir(&dir).unwrap();
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: valid C strings; a private tmpfs of 1 MiB on our own directory.
    let rc = unsafe {
        libc::mount(c"tmpfs".as_ptr(), c.as_ptr(), c"tmpfs".as_ptr(), 0, c"size=1m".as_ptr().cast())
    };
    let mounted = std::io::Error::last_os_error();
    if rc != 0 {
        std::fs::remove_dir(&dir).unwrap();
        panic!("mount of a tmpfs failed as root: {mounted}");
    }
    /// Unmounts and removes the directory whatever the assertions say. The unmount is
    /// lazy: a child that another test forks while our creation holds a file open on
    /// the tmpfs keeps that descriptor until its exec, and a plain umount would then fail
    /// with EBUSY (seen once in CI).
    struct Mounted(std::path::PathBuf, std::ffi::CString);
    impl Drop for Mounted {
        fn drop(&mut self) {
            // SAFETY: a valid C string naming the tmpfs this test mounted.
            let rc = unsafe { libc::umount2(self.1.as_ptr(), libc::MNT_DETACH) };
            let unmounted = std::io::Error::last_os_error();
            assert!(rc == 0 || std::thread::panicking(), "umount: {unmounted}");
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _mounted = Mounted(dir.clone(), c);
    let path = dir.join("seg");
    let err = Segment::create(&Name::File(path.clone()), 4 << 20, &Options::default()).unwrap_err();
    assert!(err.to_string().contains("no space left on device"), "{err}");
    assert!(!path.exists(), "a failed creation leaves nothing behind");
}

#[test]
fn a_segment_whose_creator_died_while_initialising_is_refused_at_once() {
    let name = Name::Posix(format!("/shmkit.test.{}.half", std::process::id()));
    let creating = Segment::create(&name, 8192, &Options::default()).unwrap();
    let h = layout::init(&creating, ObjectKind::Raw, 1, &[]).unwrap();
    // Never published, and the recorded creator is a pid that does not exist.
    h.creator_pid.store(u64::from(u32::MAX - 7), Ordering::Relaxed);
    let seg = Segment::open(&name, &Options::default()).unwrap();
    // The creating handle's lease says its creator lives while it is open: gone with it.
    drop(creating);
    let start = std::time::Instant::now();
    match layout::wait_ready(&seg, std::time::Duration::from_secs(30)) {
        Err(Error::Corrupt { what }) => assert!(what.contains("died while initialising"), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(5), "no waiting for a dead creator");
}

/// A new POSIX shared-memory object of 0 bytes, as a creator has it before sizing it.
fn unsized_posix(name: &str) -> std::os::fd::OwnedFd {
    use rustix::shm::OFlags;
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR;
    rustix::shm::open(name, flags, rustix::fs::Mode::from_raw_mode(0o600)).unwrap()
}

#[test]
fn an_opener_waits_for_a_creator_to_size_its_object_and_refuses_one_that_stays_empty() {
    // A creator makes the object, then sizes it: an opener in between sees 0 bytes.
    let name = format!("/{}", unique("sizing"));
    let fd = unsized_posix(&name);
    let target = format!("posix:{name}");
    let (mut child, mut out) = spawn_ready("open-len", &[target]);
    rustix::fs::ftruncate(&fd, 8192).unwrap();
    wait_for_line(&mut out, "peer:len 8192");
    assert!(child.wait().unwrap().success());
    rustix::shm::unlink(name.as_str()).unwrap();

    // One that stays empty is refused, after the opener's wait.
    let empty = format!("/{}", unique("empty"));
    let _fd = unsized_posix(&empty);
    let err =
        Segment::open(&format!("posix:{empty}").parse().unwrap(), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("empty (0 bytes)"), "{err}");
    rustix::shm::unlink(empty.as_str()).unwrap();
}
