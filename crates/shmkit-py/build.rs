//! The pytest suite needs a Python 3.11+ with venv: without one, the test that runs it
//! is compiled as ignored, with the reason, rather than failing or passing silently.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(shmkit_no_python)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PYTHON");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(python)
        .args(["-c", "import sys, venv; sys.exit(sys.version_info < (3, 11))"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("cargo::rustc-cfg=shmkit_no_python");
    }
}
