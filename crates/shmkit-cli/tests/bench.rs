//! `shmkit bench` end to end: every mechanism at every size runs in real peer
//! processes and reports figures; large messages survive partial reads; a hung row is
//! killed and reported without hanging the run. No timing thresholds: the figures
//! only have to exist and be consistent.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use common::Hogs;

fn shmkit(args: &[&str]) -> (Output, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run shmkit");
    let pid = child.id();
    (child.wait_with_output().expect("wait for shmkit"), pid)
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("shmkit-benchtest.{}.{name}", std::process::id()))
}

/// Runs `bench ARGS --json FILE`; returns the exit status, the report and stderr.
fn bench(args: &[&str]) -> (bool, Value, String) {
    let json = scratch(&format!("{}.json", args.join("_").replace(['/', ','], "-")));
    let mut all = vec!["bench", "--json", json.to_str().unwrap()];
    all.extend_from_slice(args);
    let (out, pid) = shmkit(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no JSON ({e}): {stderr}"));
    std::fs::remove_file(&json).unwrap();
    assert_no_leftovers(pid);
    (out.status.success(), serde_json::from_str(&text).unwrap(), stderr)
}

/// Nothing of run `pid` is left in /dev/shm or the temporary directory.
fn assert_no_leftovers(pid: u32) {
    let prefix = format!("shmkit.bench.{pid}.");
    let shm: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(shm.is_empty(), "left in /dev/shm: {shm:?}");
    let dir = std::env::temp_dir().join(format!("shmkit-bench.{pid}"));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

fn rows(report: &Value) -> &Vec<Value> {
    report["rows"].as_array().expect("rows")
}

fn mechanisms() -> Vec<String> {
    let (out, _) = shmkit(&["bench", "--list"]);
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn quick_bench_reports_every_mechanism_at_every_size() {
    let svg = scratch("chart.svg");
    let (ok, report, stderr) = bench(&["--quick", "--chart", svg.to_str().unwrap()]);
    assert!(ok, "bench failed: {stderr}");
    let mechs = mechanisms();
    assert!(mechs.len() >= 19, "{mechs:?}");
    for size in [64u64, 1024, 65536, 1 << 20] {
        for mech in &mechs {
            let found: Vec<&Value> = rows(&report)
                .iter()
                .filter(|r| r["mechanism"] == mech.as_str() && r["size"] == size)
                .collect();
            assert_eq!(found.len(), 1, "{mech} {size}: {found:?}");
            let r = found[0];
            if r["status"] == "n/a" && mech.starts_with("iceoryx2-") {
                // Built only with the peers feature (CI runs those rows separately).
                assert!(r["note"].as_str().unwrap().contains("peers"), "{r}");
                continue;
            }
            if r["status"] == "n/a" && mech == "shmkit-c" {
                // libshmkit.so is built by its own package; the row is checked with it
                // by c_abi_row_runs_with_libshmkit_beside_the_binary.
                assert!(r["note"].as_str().unwrap().contains("libshmkit.so"), "{r}");
                continue;
            }
            if r["status"] == "n/a" {
                // Only a real system limit below the size excuses a row.
                let note = r["note"].as_str().unwrap();
                let limit: u64 = note
                    .split("limit ")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(limit < size, "{mech} {size}: {note}");
                continue;
            }
            assert_eq!(r["status"], "ok", "{mech} {size}: {r}");
            let positive = |v: &Value| v.as_f64().is_some_and(|x| x > 0.0);
            if r["class"] != "copy" {
                assert!(positive(&r["latency"]["p50"]), "{mech} {size}: {r}");
                assert!(positive(&r["round_trips_per_sec"]), "{mech} {size}: {r}");
                assert!(r["latency"]["p50"].as_f64() <= r["latency"]["max"].as_f64());
                assert!(r["cpu_pong"].is_u64(), "{mech} {size}: {r}");
            }
            // Floors move one word and rpc calls wait for their replies: no stream.
            if r["class"] != "floor" && mech != "shmkit-rpc" {
                assert!(positive(&r["stream"]["messages_per_sec"]), "{mech} {size}: {r}");
                assert!(positive(&r["stream"]["bytes_per_sec"]), "{mech} {size}: {r}");
            }
            if r["class"] == "ipc" {
                assert!(positive(&r["vs_floor"]), "{mech} {size}: {r}");
            }
        }
    }
    // Pinned by default on a machine with two CPUs: the peers report where they ran.
    if report["machine"]["allowed_cpus"].as_array().unwrap().len() >= 2 {
        let r = rows(&report).iter().find(|r| r["mechanism"] == "shmkit-spin").unwrap();
        assert_eq!(r["cpu_ping"], report["settings"]["cpu_ping"]);
        assert_eq!(r["cpu_pong"], report["settings"]["cpu_pong"]);
    }
    assert!(report["machine"]["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    let chart = std::fs::read_to_string(&svg).unwrap();
    std::fs::remove_file(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    for mech in &mechs {
        assert!(chart.contains(&format!(">{mech}<")), "{mech} missing from the chart");
    }
}

#[test]
fn large_messages_cross_stream_sockets_whole_despite_partial_reads() {
    // 64 KiB and 1 MiB messages arrive in many pieces over unix stream sockets and
    // TCP (ipc-bench treats a short read as fatal at these sizes).
    let (ok, report, stderr) =
        bench(&["--mech", "unix-stream,tcp", "--sizes", "64K,1M", "--count", "200"]);
    assert!(ok, "bench failed: {stderr}");
    for mech in ["unix-stream", "tcp"] {
        for size in [65536u64, 1 << 20] {
            let r = rows(&report)
                .iter()
                .find(|r| r["mechanism"] == mech && r["size"] == size)
                .unwrap_or_else(|| panic!("{mech} {size} missing"));
            assert_eq!(r["status"], "ok", "{r}");
            // Every round trip and every streamed message came back whole and in order
            // (ping checks each reply's sequence number, pong each streamed one).
            assert_eq!(r["round_trips"], 200, "{r}");
            assert_eq!(r["stream"]["messages"], 200, "{r}");
        }
    }
}

#[test]
fn mpsc_rows_stream_from_every_sender_and_report_their_shares() {
    // Pong checks each sender's numbering and waits for every sender's last message:
    // an "ok" row means all of them arrived whole and in order.
    let (ok, report, stderr) =
        bench(&["--mech", "shmkit-mpsc-2,shmkit-mpsc-4", "--sizes", "64,64K", "--count", "20000"]);
    assert!(ok, "bench failed: {stderr}");
    for (mech, senders) in [("shmkit-mpsc-2", 2), ("shmkit-mpsc-4", 4)] {
        for size in [64u64, 65536] {
            let r = rows(&report)
                .iter()
                .find(|r| r["mechanism"] == mech && r["size"] == size)
                .unwrap_or_else(|| panic!("{mech} {size} missing"));
            assert_eq!(r["status"], "ok", "{r}");
            assert_eq!(r["round_trips"], 20000, "{r}");
            let shares: Vec<f64> = r["sender_shares"]
                .as_array()
                .unwrap_or_else(|| panic!("no shares: {r}"))
                .iter()
                .map(|s| s.as_f64().unwrap())
                .collect();
            assert_eq!(shares.len(), senders, "{r}");
            assert!(shares.iter().all(|s| (0.0..=1.0).contains(s)), "{r}");
            assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{r}");
            // The stream figures are all senders' together, at most all they sent.
            let messages = r["stream"]["messages"].as_u64().unwrap();
            assert!(messages > 0 && messages <= 20000 * senders as u64, "{r}");
        }
    }
}

#[test]
fn c_abi_row_runs_with_libshmkit_beside_the_binary() {
    // libshmkit.so of this profile, beside the shmkit binary (cargo test does not build
    // another package's cdylib by itself).
    let exe = Path::new(env!("CARGO_BIN_EXE_shmkit"));
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "-q", "-p", "shmkit-c"]);
    if exe.parent().and_then(Path::file_name).is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    assert!(build.status().expect("cargo build -p shmkit-c").success());
    assert!(exe.with_file_name("libshmkit.so").exists());
    let (ok, report, stderr) =
        bench(&["--mech", "shmkit-adaptive,shmkit-c", "--sizes", "64,64K", "--count", "5000"]);
    assert!(ok, "bench failed: {stderr}");
    for size in [64u64, 65536] {
        let r = rows(&report)
            .iter()
            .find(|r| r["mechanism"] == "shmkit-c" && r["size"] == size)
            .unwrap_or_else(|| panic!("shmkit-c {size} missing"));
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["round_trips"], 5000, "{r}");
        assert_eq!(r["stream"]["messages"], 5000, "{r}");
    }
}

#[test]
fn a_row_that_outlives_its_timeout_is_killed_and_reported() {
    // Sleep-polling takes tens of µs per round trip: 10^8 of them cannot finish in 1 s.
    let (ok, report, stderr) = bench(&[
        "--mech",
        "sysv-shm-sleep",
        "--sizes",
        "64",
        "--count",
        "100000000",
        "--timeout",
        "1",
    ]);
    assert!(!ok, "a failed row must fail the run");
    assert!(stderr.contains("rows failed"), "{stderr}");
    let r = rows(&report).iter().find(|r| r["mechanism"] == "sysv-shm-sleep").unwrap();
    assert_eq!(r["status"], "failed");
    assert!(r["note"].as_str().unwrap().contains("timed out"), "{r}");
}

#[test]
fn rows_measured_while_other_processes_ran_say_so() {
    // A busy loop on every CPU, for the length of the run.
    let hogs = Hogs::start();
    let json = scratch("busy.json");
    let (out, pid) = shmkit(&[
        "bench",
        "--mech",
        "shmkit-block",
        "--sizes",
        "64",
        "--duration",
        "0.5",
        "--json",
        json.to_str().unwrap(),
    ]);
    drop(hogs);
    assert_no_leftovers(pid);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let r = rows(&report).iter().find(|r| r["mechanism"] == "shmkit-block").unwrap();
    assert!(r["interference"]["others_cpus"].as_f64().unwrap() >= 0.5, "{r}");
    // The table flags the row and says why under it.
    assert!(table.contains("shmkit-block 64B: other processes used"), "{table}");
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let (out, _) = shmkit(&["bench", "--mech", "carrier-pigeon"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown mechanism") && err.contains("shmkit-spin"), "{err}");
    for (args, says) in [
        (&["bench", "--sizes", "4"][..], "out of range"),
        (&["bench", "--pin", "0,4096"][..], "not available"),
        (&["bench", "--duration", "0"][..], "--duration"),
    ] {
        let (out, _) = shmkit(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (out, _) = shmkit(&["bench", "--pin", "sideways"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn idle_reports_every_parked_end_and_how_fast_each_notices_a_killed_peer() {
    let (ok, report, stderr) = bench(&["--idle", "0.3"]);
    assert!(ok, "bench --idle failed: {stderr}");
    assert!(["pidfd", "watchdog"].contains(&report["death_detection"].as_str().unwrap()));
    let ends: Vec<&str> = rows(&report).iter().map(|r| r["end"].as_str().unwrap()).collect();
    assert_eq!(ends, ["recv", "sub", "pong", "rpc-server"]);
    for r in rows(&report) {
        assert!(r["seconds"].as_f64().unwrap() >= 0.3, "{r}");
        assert!(r["context_switches"].is_u64() && r["cpu_ms"].as_f64().unwrap() >= 0.0, "{r}");
        // recv and sub exit when their peer is killed; the others have no such peer.
        let exits = matches!(r["end"].as_str(), Some("recv" | "sub"));
        assert_eq!(r["peer_death_to_exit_ms"].as_f64().is_some_and(|ms| ms > 0.0), exits, "{r}");
    }
}

#[test]
fn idle_refuses_a_nonsense_duration_and_the_row_options() {
    for args in [&["bench", "--idle", "0"][..], &["bench", "--idle", "-1"]] {
        let (out, _) = shmkit(args);
        assert!(!out.status.success(), "{args:?}");
    }
    let (out, _) = shmkit(&["bench", "--idle", "1", "--mech", "pipe"]);
    assert_eq!(out.status.code(), Some(2), "--idle with --mech is a usage error");
}
