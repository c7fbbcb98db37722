//! The `shmkit` binary as a user runs it: listings, creation, removal, raw access, and
//! exit codes for bad input.

use std::process::{Command, Output};

use serde_json::Value;

fn shmkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmkit")).args(args).output().expect("run shmkit")
}

fn ok(args: &[&str]) -> String {
    let out = shmkit(args);
    assert!(
        out.status.success(),
        "shmkit {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("shmkit.clitest.{}.{tag}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn listed(json: &Value, section: &str, target: &str) -> Option<Value> {
    json[section].as_array().unwrap().iter().find(|r| r["target"] == target).cloned()
}

#[test]
fn ls_json_lists_a_created_posix_segment_and_rm_removes_exactly_it() {
    let a = format!("/{}", unique("a"));
    let b = format!("/{}", unique("b"));
    ok(&["create", "--posix", &a, "--size", "8K"]);
    ok(&["create", "--posix", &b, "--size", "4K", "--mode", "0640"]);
    let ls: Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    let row = listed(&ls, "posix", &format!("posix:{a}")).expect("created segment listed");
    assert_eq!(row["bytes"], 8192);
    assert_eq!(row["perms"], "0600");
    assert_eq!(row["view"]["shmkit"], true);
    assert_eq!(row["view"]["header"]["object"], "raw");
    assert_eq!(listed(&ls, "posix", &format!("posix:{b}")).unwrap()["perms"], "0640");

    let said = ok(&["rm", &format!("posix:{a}")]);
    assert_eq!(said.trim(), format!("removed posix:{a} (8192 bytes)"));
    let ls: Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    assert!(listed(&ls, "posix", &format!("posix:{a}")).is_none());
    assert!(listed(&ls, "posix", &format!("posix:{b}")).is_some(), "rm removed the wrong segment");
    ok(&["rm", &format!("posix:{b}")]);
}

#[test]
fn sysv_segment_is_listed_with_key_and_removed_by_key() {
    let key = format!("0x5c{:06x}", std::process::id() & 0xffffff);
    let made: Value =
        serde_json::from_str(&ok(&["create", "--sysv", "--key", &key, "--size", "4096", "--json"]))
            .unwrap();
    let target = format!("sysv:{key}");
    assert_eq!(made["target"], target);
    let ls: Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    let row = listed(&ls, "sysv", &target).expect("listed");
    assert_eq!(row["key"], key);
    assert_eq!(row["shmid"], made["shmid"]);
    assert_eq!(row["view"]["header"]["object"], "raw");
    let info: Value = serde_json::from_str(&ok(&["info", &target, "--json"])).unwrap();
    assert_eq!(info["segment"]["size"], 4096);
    assert_eq!(info["shmkit"], true);
    // This machine's kernel (>= 5.3) gives pidfds: death is an event, not a tick.
    assert_eq!(info["death_detection"], "pidfd");
    ok(&["rm", &format!("sysv-id:{}", made["shmid"])]);
    let ls: Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    assert!(listed(&ls, "sysv", &target).is_none());
}

#[test]
fn rm_refuses_a_foreign_segment_without_force() {
    let name = format!("/{}", unique("foreign"));
    ok(&["create", "--posix", &name, "--size", "4K", "--no-header"]);
    let target = format!("posix:{name}");
    let out = shmkit(&["rm", &target]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a shmkit segment") && err.contains("--force"), "{err}");
    let info: Value = serde_json::from_str(&ok(&["info", &target, "--json"])).unwrap();
    assert_eq!(info["shmkit"], false);
    assert!(info["invalid"].as_str().unwrap().contains("magic"), "{info}");
    ok(&["rm", "--force", &target]);
}

#[test]
fn write_then_dump_shows_the_bytes_like_xxd() {
    let path = std::env::temp_dir().join(unique("file"));
    let target = format!("file:{}", path.display());
    ok(&["create", "--file", path.to_str().unwrap(), "--size", "4096"]);
    ok(&["write", &target, "--offset", "0x200", "--text", "hello, shm"]);
    ok(&["write", &target, "--offset", "0x20a", "--hex", "de ad be ef"]);
    let dump = ok(&["dump", &target, "--offset", "512", "--len", "16"]);
    assert_eq!(dump, "00000200: 6865 6c6c 6f2c 2073 686d dead beef 0000  hello, shm......\n");
    let j: Value =
        serde_json::from_str(&ok(&["dump", &target, "--offset", "0x20a", "--len", "4", "--json"]))
            .unwrap();
    assert_eq!(j["hex"], "deadbeef");
    let j: Value =
        serde_json::from_str(&ok(&["write", &target, "--offset", "0", "--hex", "00", "--json"]))
            .unwrap();
    assert_eq!(j["written"], 1);
    let whole = ok(&["dump", &target]);
    assert!(whole.starts_with("00000000: 0048 4d4b 4954 0001"), "{whole}");
    assert!(whole.contains("\n*\n"), "zero runs are squeezed");
    let out = shmkit(&["dump", &target, "--offset", "4000", "--len", "200"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the segment"));
    let out = shmkit(&["write", &target, "--offset", "4095", "--text", "xy"]);
    assert_eq!(out.status.code(), Some(1));
    // The magic is broken now: removal needs --force.
    let removed: Value = serde_json::from_str(&ok(&["rm", "--force", "--json", &target])).unwrap();
    assert_eq!(removed[0]["bytes"], 4096);
    assert!(!path.exists());
}

#[test]
fn bad_targets_and_arguments_exit_2_with_usage() {
    for args in [
        vec!["info", "nonsense"],
        vec!["info", "posix:no-slash"],
        vec!["rm", "sysv:0xzz"],
        vec!["dump", "ftok:/tmp"],
        vec!["create", "--posix", "/x", "--size", "12Q"],
        vec!["create", "--size", "4K"],
    ] {
        let out = shmkit(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Usage") || err.contains("--help"), "{args:?}: {err}");
    }
}

#[test]
fn a_missing_segment_is_exit_1_with_the_call_named() {
    let out = shmkit(&["info", &format!("posix:/{}", unique("missing"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("shmkit: cannot open posix:/") && err.contains("shm_open("), "{err}");
}

#[test]
fn creating_twice_fails_unless_open_existing() {
    let name = format!("/{}", unique("twice"));
    ok(&["create", "--posix", &name, "--size", "4K"]);
    let out = shmkit(&["create", "--posix", &name, "--size", "4K"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let again = ok(&["create", "--posix", &name, "--size", "4K", "--open-existing"]);
    assert!(again.starts_with("opened existing"), "{again}");
    ok(&["rm", &format!("posix:{name}")]);
}

#[test]
fn key_and_ftok_name_a_sysv_segment_without_sysv() {
    // --key and --ftok imply System V; --sysv stays accepted beside them.
    let dir = std::env::temp_dir().join(unique("ftok"));
    std::fs::write(&dir, b"").unwrap();
    let spec = format!("{}:7", dir.display());
    let made: Value =
        serde_json::from_str(&ok(&["create", "--ftok", &spec, "--size", "4096", "--json"]))
            .unwrap();
    assert!(made["target"].as_str().unwrap().starts_with("sysv:"), "{made}");
    ok(&["rm", &format!("sysv-id:{}", made["shmid"])]);
    let key = format!("0x5c{:06x}", (std::process::id() + 1) & 0xffffff);
    let made: Value =
        serde_json::from_str(&ok(&["create", "--key", &key, "--size", "4096", "--json"])).unwrap();
    ok(&["rm", &format!("sysv-id:{}", made["shmid"])]);
    // Without a SysV name, --sysv is a usage error.
    let out = shmkit(&["create", "--sysv", "--posix", "/shmkit.clitest.x", "--size", "4096"]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_file(&dir).unwrap();
}
