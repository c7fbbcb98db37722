//! The Python module's tests (`python/tests`, pytest) run by `cargo test --workspace`,
//! so the README's one test command tests the bindings too.
//!
//! A virtual environment under the target directory gets maturin, pytest and numpy
//! from PyPI (once; later runs reuse it), `maturin develop` builds the module from
//! this workspace into it, and pytest runs the suite against it and the workspace's
//! `shmkit` binary (the interop tests). Set PYTHON to choose the interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    text
}

/// The `shmkit` binary of this build (target/<profile>/shmkit), built if missing.
fn shmkit_bin() -> PathBuf {
    // target/<profile>/deps/pytest-<hash>
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join("shmkit");
    if !bin.exists() {
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(root()).args(["build", "-p", "shmkit-cli"]);
        if profile == "release" {
            cmd.arg("--release");
        }
        run(&mut cmd, "cargo build -p shmkit-cli");
    }
    bin
}

#[test]
#[cfg_attr(shmkit_no_python, ignore = "needs python3 >= 3.11 with venv (set PYTHON to choose one)")]
fn the_python_module_passes_its_pytest_suite() {
    let root = root();
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run(Command::new(base).arg("-m").arg("venv").arg(&venv), "python3 -m venv");
    }
    let have = Command::new(&python)
        .args(["-c", "import pytest, numpy, maturin"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        run(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "maturin>=1.9.4,<2",
                "pytest",
                "numpy",
            ]),
            "pip install maturin pytest numpy (from PyPI)",
        );
    }
    let path =
        format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    run(
        Command::new(venv.join("bin/maturin"))
            .current_dir(&root)
            .args(["develop", "--quiet", "--manifest-path", "crates/shmkit-py/Cargo.toml"])
            .env("VIRTUAL_ENV", &venv)
            .env("PATH", &path),
        "maturin develop",
    );
    let out = run(
        Command::new(&python)
            .current_dir(&root)
            .args(["-m", "pytest", "python/tests", "-q", "-p", "no:cacheprovider", "-rs"])
            .env("SHMKIT_BIN", shmkit_bin())
            .env("PATH", &path),
        "pytest python/tests",
    );
    println!("{out}");
    // Every test ran: a skip would pass silently here.
    let summary = out.lines().rev().find(|l| l.contains(" passed")).unwrap_or_default();
    assert!(!summary.contains("skipped") && !summary.contains("xfail"), "{summary}");
}
