//! libshmkit.so gets the soname libshmkit.so.0 (programs linked against it load the
//! ABI version they were built for); and the C tests that need gcc or valgrind are
//! compiled as ignored, with the reason, where those are missing.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,libshmkit.so.0");
    println!("cargo::rustc-check-cfg=cfg(shmkit_no_cc)");
    println!("cargo::rustc-check-cfg=cfg(shmkit_no_valgrind)");
    let runs =
        |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !runs("gcc") || !runs("g++") {
        println!("cargo::rustc-cfg=shmkit_no_cc");
    }
    if !runs("valgrind") {
        println!("cargo::rustc-cfg=shmkit_no_valgrind");
    }
}
