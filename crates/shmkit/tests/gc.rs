//! `shmkit::gc` removes exactly the shmkit segments nobody alive holds: dead creators,
//! dead endpoints, reused pids; never live, foreign, or unread-but-cleanly-closed ones.
//! One test function: gc looks at every segment of this user, so the scenarios must
//! not run in parallel with each other.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use shmkit::channel::spsc::{self, Config};
use shmkit::channel::Sender;
use shmkit::gc::{gc, GcOptions, Verdict};
use shmkit::{layout, Name, Options, Segment};

fn config() -> Config {
    Config { capacity: 4096, ..Config::default() }
}

#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    let name: Name = args[0].parse().unwrap();
    let seg = spsc::create(&name, &config()).unwrap();
    seg.persist();
    let mut tx = Sender::from_segment(seg).unwrap();
    match role.as_str() {
        // Create and attach, then wait to be killed.
        "hold" => {
            println!("peer:ready");
            loop {
                std::thread::park();
            }
        }
        // Send a message and close cleanly: a channel waiting for a late receiver.
        "send-and-exit" => {
            tx.send(b"for a late receiver").unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

fn killed_holder(name: &Name) {
    let (mut child, _) = spawn_ready("hold", &[name.to_string()]);
    child.kill().unwrap();
    child.wait().unwrap();
}

fn verdict<'a>(all: &'a [Verdict], name: &Name) -> Option<&'a Verdict> {
    let target = match name {
        Name::SysVKey(_) => {
            let seg = Segment::open(name, &Options::default()).ok()?;
            Name::SysVId(seg.sysv_id()?).to_string()
        }
        other => other.to_string(),
    };
    all.iter().find(|v| v.target == target)
}

#[test]
fn gc_removes_exactly_the_segments_of_dead_processes() {
    // File-backed segments are found through shmkit's registry: a private one here
    // (the peers inherit the variable).
    let registry = std::env::temp_dir().join(unique("registry"));
    std::env::set_var("SHMKIT_REGISTRY", &registry);
    // A channel whose creator and sender were killed: POSIX, SysV, and a file.
    let dead_posix = Name::Posix(format!("/{}", unique("dead")));
    let dead_sysv = Name::SysVKey(test_key());
    let dead_file_path = std::env::temp_dir().join(unique("deadfile"));
    let dead_file = Name::File(dead_file_path.clone());
    killed_holder(&dead_posix);
    killed_holder(&dead_sysv);
    killed_holder(&dead_file);
    assert_eq!(shmkit::segment::registry::entries().len(), 1, "the file was registered");
    // A registered path now holding someone else's file, and one whose file is gone.
    let replaced = std::env::temp_dir().join(unique("replaced"));
    let r = Segment::create(&Name::File(replaced.clone()), 4096, &Options::default()).unwrap();
    r.persist();
    drop(r);
    std::fs::write(&replaced, b"not shmkit's any more").unwrap();
    let vanished = std::env::temp_dir().join(unique("vanished"));
    let v = Segment::create(&Name::File(vanished.clone()), 4096, &Options::default()).unwrap();
    v.persist();
    drop(v);
    std::fs::remove_file(&vanished).unwrap();
    assert_eq!(shmkit::segment::registry::entries().len(), 3);
    // A channel held by this (live) process.
    let live = Name::Posix(format!("/{}", unique("live")));
    let live_tx = Sender::create(&live, &config()).unwrap();
    // A channel whose creator died but whose header records our pid with another start
    // time: a reused pid must not keep it alive.
    let reused = Name::Posix(format!("/{}", unique("reused")));
    let seg = spsc::create(&reused, &config()).unwrap();
    seg.persist();
    layout::header(&seg).unwrap().creator_start.fetch_add(1, Ordering::Relaxed);
    drop(seg);
    // A foreign segment with our prefix but no header.
    let foreign = Name::Posix(format!("/{}", unique("foreign")));
    let f = Segment::create(&foreign, 4096, &Options::default()).unwrap();
    f.persist();
    drop(f);
    // Unread messages from a sender that closed cleanly.
    let unread = Name::Posix(format!("/{}", unique("unread")));
    run_peer("send-and-exit", &[unread.to_string()]);

    let dry = gc(&GcOptions { dry_run: true, ..GcOptions::default() }).unwrap();
    for name in [&dead_posix, &dead_sysv, &reused, &dead_file] {
        let v = verdict(&dry, name).unwrap_or_else(|| panic!("{name} not considered: {dry:?}"));
        assert!(v.garbage && !v.removed, "{v:?}");
    }
    let v = verdict(&dry, &live).unwrap();
    assert!(!v.garbage && v.reason.contains("alive"), "{v:?}");
    let v = verdict(&dry, &unread).unwrap();
    assert!(!v.garbage && v.reason.contains("unread"), "{v:?}");
    assert!(verdict(&dry, &foreign).is_none(), "a foreign segment is never considered");
    assert!(posix_exists(&dead_posix.to_string()["posix:".len()..]), "dry run removed something");

    let done = gc(&GcOptions::default()).unwrap();
    let reused_name = reused.to_string()["posix:".len()..].to_string();
    let dead_name = dead_posix.to_string()["posix:".len()..].to_string();
    assert!(!posix_exists(&dead_name) && !posix_exists(&reused_name));
    let Name::SysVKey(key) = dead_sysv else { unreachable!() };
    assert!(!sysv_key_exists(key));
    assert!(!dead_file_path.exists(), "the dead file channel was kept");
    assert_eq!(
        std::fs::read(&replaced).unwrap(),
        b"not shmkit's any more",
        "a foreign file was touched"
    );
    assert!(shmkit::segment::registry::entries().is_empty(), "stale registry entries kept");
    std::fs::remove_file(&replaced).unwrap();
    std::fs::remove_dir_all(&registry).unwrap();
    assert!(done.iter().filter(|v| v.garbage).all(|v| v.removed), "{done:?}");
    for kept in [&live, &unread, &foreign] {
        assert!(posix_exists(&kept.to_string()["posix:".len()..]), "{kept} was removed");
    }
    drop(live_tx);
    for name in [&unread, &foreign] {
        Segment::open(name, &Options::default()).unwrap().remove().unwrap();
    }
}
