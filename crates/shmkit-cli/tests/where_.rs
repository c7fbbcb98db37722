//! `shmkit where`: two processes map one segment at different virtual addresses, and
//! (as root) the same physical frames.

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use shmkit::{Name, Options, Segment};

const BIN: &str = env!("CARGO_BIN_EXE_shmkit");

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The peer: maps the segment (at a hinted address if given), touches its first pages,
/// says where, and waits to be killed.
#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Ok(target) = std::env::var("SHMKIT_WHERE_TARGET") else { return };
    let hint = std::env::var("SHMKIT_WHERE_HINT").ok().and_then(|h| h.parse().ok());
    let seg = Segment::open(
        &target.parse::<Name>().unwrap(),
        &Options { address_hint: hint, ..Options::default() },
    )
    .unwrap();
    for page in 0..seg.len() / 4096 {
        // SAFETY: in bounds; touching the page maps it in this process.
        unsafe { std::ptr::write_volatile(seg.as_ptr().add(page * 4096), 1) };
    }
    println!("peer:mapped {}", seg.as_ptr() as usize);
    loop {
        std::thread::park();
    }
}

fn start_peer(target: &str, hint: Option<usize>, uid: Option<u32>) -> (Child, usize) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "peer_entry", "--ignored", "--nocapture", "--test-threads=1"])
        .env("SHMKIT_WHERE_TARGET", target)
        .stdout(Stdio::piped());
    if let Some(h) = hint {
        cmd.env("SHMKIT_WHERE_HINT", h.to_string());
    }
    if let Some(u) = uid {
        cmd.uid(u).gid(u);
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("peer:mapped") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "peer exited");
    }
    let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    (child, addr)
}

/// A segment of 4 touched pages mapped here and in a peer far from our address; runs
/// `where --json` on both and returns its report (and the peer, to be killed).
fn mapped_twice(tag: &str) -> (Value, Segment, Child, usize) {
    let name = format!("/shmkit.clitest.{}.{tag}", std::process::id());
    let target = format!("posix:{name}");
    let seg = Segment::create(&Name::Posix(name.clone()), 4 * 4096, &Options::default()).unwrap();
    for page in 0..4 {
        // SAFETY: in bounds; touch every page in this process too.
        unsafe { std::ptr::write_volatile(seg.as_ptr().add(page * 4096), 1) };
    }
    // Ask the peer to map far from our address, so the two surely differ.
    let hint = seg.as_ptr() as usize - (1 << 36);
    let (peer, peer_addr) = start_peer(&target, Some(hint), None);
    assert_ne!(peer_addr, seg.as_ptr() as usize);
    let me = std::process::id().to_string();
    let them = peer.id().to_string();
    let out = Command::new(BIN)
        .args(["where", &target, "--pid", &me, "--pid", &them, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).unwrap(), seg, peer, peer_addr)
}

#[test]
fn where_shows_two_virtual_ranges_of_one_segment() {
    let (r, seg, mut peer, peer_addr) = mapped_twice("where");
    let maps = r["mappings"].as_array().unwrap();
    assert_eq!(maps.len(), 2, "{r}");
    assert_eq!(maps[0]["start"], seg.as_ptr() as u64);
    assert_eq!(maps[1]["start"], peer_addr as u64);
    assert_eq!(r["distinct_addresses"], true);
    // Without --pid, every process that maps it is found (at least these two).
    let target = r["target"].as_str().unwrap();
    let text =
        String::from_utf8(Command::new(BIN).args(["where", target]).output().unwrap().stdout)
            .unwrap();
    let (me, them) = (std::process::id().to_string(), peer.id().to_string());
    assert!(text.contains(&me) && text.contains(&them), "{text}");
    peer.kill().unwrap();
    peer.wait().unwrap();
    drop(seg);
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: frame numbers are hidden from other users")]
fn as_root_where_shows_the_same_physical_frames_in_both_processes() {
    assert!(is_root(), "built as root, run as another user: rebuild (cargo clean -p shmkit-cli)");
    let (r, seg, mut peer, _) = mapped_twice("where-root");
    let maps = r["mappings"].as_array().unwrap();
    assert_eq!(r["frames_visible"], true);
    assert_eq!(r["same_frames"], true, "{r}");
    assert_eq!(maps[0]["frames"], maps[1]["frames"]);
    assert!(maps[0]["frames"].as_array().unwrap().iter().all(|f| f.as_u64().unwrap() > 0));
    peer.kill().unwrap();
    peer.wait().unwrap();
    drop(seg);
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: runs both sides as an unprivileged user")]
fn without_privilege_where_shows_addresses_and_says_why_frames_are_hidden() {
    assert!(is_root(), "built as root, run as another user: rebuild (cargo clean -p shmkit-cli)");
    let name = format!("/shmkit.clitest.{}.where-nobody", std::process::id());
    let target = format!("posix:{name}");
    let seg =
        Segment::create(&Name::Posix(name), 4096, &Options { mode: 0o666, ..Options::default() })
            .unwrap();
    let (mut peer, _) = start_peer(&target, None, Some(65534));
    let out = Command::new(BIN)
        .args(["where", &target, "--pid", &peer.id().to_string()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("rw-s") && text.contains("CAP_SYS_ADMIN"), "{text}");
    peer.kill().unwrap();
    peer.wait().unwrap();
    drop(seg);
}
