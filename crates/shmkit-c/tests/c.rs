//! The C ABI from C: `tests/c/peer.c`, compiled here by gcc against `libshmkit.a` and
//! `include/shmkit.h`, talks across processes to itself and to the `shmkit` CLI (the
//! Rust library), and runs again under AddressSanitizer and valgrind. The header also
//! compiles as C++.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// target/<profile>, from this test binary's path (target/<profile>/deps/c-<hash>).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

fn checked(cmd: &mut Command, what: &str) -> Output {
    succeeded(cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}")), what)
}

/// `out`, after checking that its process succeeded (its output says why not).
fn succeeded(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// libshmkit.a and the `shmkit` binary of this profile, built (once per run) so that
/// they are current: `cargo test` does not build a crate's staticlib for its tests.
fn built() -> &'static Path {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = profile_dir();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(root()).args(["build", "-q", "-p", "shmkit-c", "-p", "shmkit-cli"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        checked(&mut cmd, "cargo build -p shmkit-c -p shmkit-cli");
        dir
    })
}

/// peer.c compiled for `flavour` ("plain" or "asan"), once per run: the tests run in
/// parallel, and a binary rewritten while another test runs it fails to start.
fn peer(flavour: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, exe)) = built.iter().find(|(f, _)| f == flavour) {
        return exe.clone();
    }
    let exe = compile(flavour);
    built.push((flavour.to_string(), exe.clone()));
    exe
}

fn compile(flavour: &str) -> PathBuf {
    let dir = built();
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("c-peer-{flavour}"));
    let flags: &[&str] = match flavour {
        "asan" => &["-g", "-O1", "-fsanitize=address", "-fno-omit-frame-pointer"],
        _ => &["-g", "-O2"],
    };
    let root = root();
    checked(
        Command::new("gcc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .args(flags)
            .arg("-I")
            .arg(root.join("include"))
            .arg(root.join("crates/shmkit-c/tests/c/peer.c"))
            .arg(dir.join("libshmkit.a"))
            .args(["-lpthread", "-ldl", "-lm", "-o"])
            .arg(&exe),
        &format!("gcc ({flavour})"),
    );
    exe
}

fn name(what: &str) -> String {
    format!("posix:/shmkit.ctest.{}.{what}", std::process::id())
}

fn start(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a peer")
}

/// Reads the rest of a child's output in a thread (so a chatty child never blocks on a
/// full pipe); the handle gives it back.
fn read_rest(mut out: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut rest = String::new();
        out.read_to_string(&mut rest).expect("read stdout");
        rest
    })
}

/// A child's first line of stdout, and the rest of it through [`read_rest`].
fn first_line(child: &mut Child) -> (String, std::thread::JoinHandle<String>) {
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    (line, read_rest(out))
}

/// Waits for a child's "ready" line; the rest of its stdout comes back from the handle.
fn ready(child: &mut Child) -> std::thread::JoinHandle<String> {
    let (line, rest) = first_line(child);
    assert_eq!(line, "ready\n", "the peer did not get ready");
    rest
}

fn finish(child: Child, what: &str) -> Output {
    succeeded(child.wait_with_output().expect("wait"), what)
}

fn both_ways(flavour: &str, messages: u32) {
    let exe = peer(flavour);
    let (there, back) = (name(&format!("{flavour}.there")), name(&format!("{flavour}.back")));
    let n = messages.to_string();
    let mut origin = start(Command::new(&exe).args(["origin", &there, &back, &n]));
    let _rest = ready(&mut origin);
    let echo = start(Command::new(&exe).args(["echo", &there, &back, &n]));
    finish(echo, "echo");
    finish(origin, "origin");
}

#[test]
#[cfg_attr(shmkit_no_cc, ignore = "needs gcc and g++")]
fn a_hundred_thousand_checksummed_messages_each_way_between_c_processes() {
    both_ways("plain", 100_000);
}

#[test]
#[cfg_attr(shmkit_no_cc, ignore = "needs gcc and g++")]
fn every_end_and_every_bad_argument_give_their_codes() {
    let exe = peer("plain");
    checked(Command::new(&exe).args(["api", &name("api")]), "api");
    checked(Command::new(&exe).arg("bad-args"), "bad-args");
    checked(Command::new(&exe).arg("gc"), "gc");
}

#[test]
#[cfg_attr(shmkit_no_cc, ignore = "needs gcc and g++")]
fn under_address_sanitizer_the_c_side_is_clean() {
    let exe = peer("asan");
    // LeakSanitizer on: a leak is an error too.
    checked(
        Command::new(&exe).args(["api", &name("asan.api")]).env("ASAN_OPTIONS", "detect_leaks=1"),
        "api (ASan)",
    );
    checked(
        Command::new(&exe).arg("bad-args").env("ASAN_OPTIONS", "detect_leaks=1"),
        "bad-args (ASan)",
    );
    both_ways("asan", 10_000);
}

#[test]
#[cfg_attr(any(shmkit_no_cc, shmkit_no_valgrind), ignore = "needs gcc, g++ and valgrind")]
fn under_valgrind_no_error_and_no_leak() {
    let exe = peer("plain");
    for args in [vec!["api".to_string(), name("vg.api")], vec!["bad-args".to_string()]] {
        checked(
            Command::new("valgrind")
                .args(["-q", "--error-exitcode=99", "--leak-check=full"])
                .args([
                    "--errors-for-leak-kinds=definite,indirect",
                    "--show-leak-kinds=definite,indirect",
                ])
                .arg(&exe)
                .args(&args),
            &format!("valgrind {args:?}"),
        );
    }
}

#[test]
#[cfg_attr(shmkit_no_cc, ignore = "needs gcc and g++")]
fn the_shmkit_cli_and_a_c_program_share_channels_both_ways() {
    let exe = peer("plain");
    let shmkit = built().join("shmkit");
    // shmkit send (Rust) -> C receiver, byte for byte.
    let target = name("cli.in");
    let lines: String = (0..5000).map(|i| format!("{i} {}\n", "x".repeat(i % 300))).collect();
    let mut c = start(Command::new(&exe).args(["recv-all", &target]));
    let received = ready(&mut c);
    let mut send = start(Command::new(&shmkit).args(["send", &target]));
    send.stdin.take().expect("stdin").write_all(lines.as_bytes()).expect("write");
    finish(send, "shmkit send");
    finish(c, "C recv-all");
    assert_eq!(received.join().expect("reader"), lines);
    // C sender -> shmkit recv (Rust).
    let target = name("cli.out");
    let mut recv =
        start(Command::new(&shmkit).args(["recv", &target, "--create", "--count", "5000"]));
    let received = read_rest(recv.stdout.take().expect("stdout"));
    let mut c = start(Command::new(&exe).args(["send-lines", &target]));
    c.stdin.take().expect("stdin").write_all(lines.as_bytes()).expect("write");
    finish(c, "C send-lines");
    finish(recv, "shmkit recv");
    assert_eq!(received.join().expect("reader"), lines);
}

#[test]
#[cfg_attr(shmkit_no_cc, ignore = "needs gcc and g++")]
fn a_killed_c_peer_is_reported_as_eownerdead() {
    let exe = peer("plain");
    let target = name("dead");
    let mut holder = start(Command::new(&exe).args(["hold", &target]));
    let _rest = ready(&mut holder);
    let pid = holder.id().to_string();
    let mut survivor = start(Command::new(&exe).args(["outlive", &target, &pid]));
    let _rest = ready(&mut survivor);
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    finish(survivor, "outlive");
    // The dead creator could not remove its channel (gc would; this is quicker).
    let path = format!("/dev/shm{}", target.trim_start_matches("posix:"));
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
}

#[test]
#[cfg_attr(shmkit_no_cc, ignore = "needs gcc and g++")]
fn a_c_client_calls_a_c_server() {
    let exe = peer("plain");
    let target = name("rpc");
    let mut server = start(Command::new(&exe).args(["serve", &target]));
    let said = ready(&mut server);
    finish(start(Command::new(&exe).args(["call", &target, "10000"])), "call");
    finish(server, "serve");
    assert_eq!(said.join().expect("reader").trim(), "served 10000");
}

#[test]
#[cfg_attr(shmkit_no_cc, ignore = "needs gcc and g++")]
fn the_header_compiles_as_c99_and_as_cpp() {
    let root = root();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join("header-check.c");
    std::fs::write(
        &src,
        "#include \"shmkit.h\"\nint main(void) { return shmkit_version() == 0; }\n",
    )
    .expect("write");
    let include = root.join("include");
    checked(
        Command::new("gcc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "-I"])
            .arg(&include)
            .arg(&src)
            .arg("-o")
            .arg(dir.join("h.o")),
        "gcc -std=c99",
    );
    checked(
        Command::new("g++")
            .args(["-std=c++11", "-Wall", "-Wextra", "-Werror", "-x", "c++", "-c", "-I"])
            .arg(&include)
            .arg(&src)
            .arg("-o")
            .arg(dir.join("hpp.o")),
        "g++ -std=c++11",
    );
}

#[test]
#[cfg_attr(shmkit_no_cc, ignore = "needs gcc and g++")]
fn make_install_then_the_examples_build_through_pkg_config_and_run() {
    let root = root();
    let dir = built();
    let tmp =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("c-install.{}", std::process::id()));
    let prefix = tmp.join("prefix");
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let target_dir = dir.parent().expect("target dir");
    checked(
        Command::new("make")
            .current_dir(&root)
            .args(["-s", "install"])
            .arg(format!("PREFIX={}", prefix.display()))
            .arg(format!("PROFILE={profile}"))
            .arg(format!("TARGET_DIR={}", target_dir.display())),
        "make install",
    );
    let pc = prefix.join("lib/pkgconfig");
    checked(
        Command::new("pkg-config")
            .args(["--exists", "--print-errors", "shmkit"])
            .env("PKG_CONFIG_PATH", &pc),
        "pkg-config shmkit",
    );
    let out = tmp.join("bin");
    std::fs::create_dir_all(&out).expect("mkdir");
    checked(
        Command::new("make")
            .current_dir(root.join("examples/c"))
            .arg("-s")
            .arg(format!("OUT={}", out.display()))
            .env("PKG_CONFIG_PATH", &pc),
        "make -C examples/c",
    );
    let lib = prefix.join("lib");
    let mut server = start(Command::new(out.join("server")).env("LD_LIBRARY_PATH", &lib));
    let (line, said) = first_line(&mut server);
    assert!(line.starts_with("serving"), "{line}");
    let client = finish(
        start(Command::new(out.join("client")).arg("2000").env("LD_LIBRARY_PATH", &lib)),
        "client",
    );
    assert!(String::from_utf8_lossy(&client.stdout).contains("2000 ping/pong round trips"));
    finish(server, "server");
    assert!(said.join().expect("reader").contains("answered 2000 pings"));
    let frames = finish(
        start(Command::new(out.join("frames")).arg("2000").env("LD_LIBRARY_PATH", &lib)),
        "frames",
    );
    assert!(String::from_utf8_lossy(&frames.stdout).contains("received 2000 frames"));
    std::fs::remove_dir_all(&tmp).expect("clean up");
}
