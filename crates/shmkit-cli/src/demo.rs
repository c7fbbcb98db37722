//! `shmkit demo`: one physical segment, two processes, two virtual addresses.

use std::process::Command;

use shmkit::layout::{self, ObjectKind, HEADER_SIZE};
use shmkit::{Name, Options, Segment};

use crate::util::{fail, CliResult, Context};

#[derive(clap::Args, Debug)]
pub struct Args {}

#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    target: Name,
}

const SIZE: usize = 4096;

pub fn run(_args: &Args) -> CliResult {
    let name = Name::Posix(format!("/shmkit.demo.{}", std::process::id()));
    let seg = Segment::create(&name, SIZE, &Options::default())
        .context(format!("cannot create {name}"))?;
    let h = layout::init(&seg, ObjectKind::Raw, 0, &[HEADER_SIZE as u64])?;
    layout::publish(h);
    println!(
        "parent pid {}: created {name} ({SIZE} bytes) at virtual address {:p}",
        std::process::id(),
        seg.as_ptr()
    );
    let exe = std::env::current_exe().context("cannot find the shmkit executable")?;
    let status = Command::new(exe)
        .arg("__demo-child")
        .arg(name.to_string())
        .status()
        .context("cannot start the child")?;
    if !status.success() {
        return fail(format!("the child failed: {status}"));
    }
    let mut text = vec![0u8; 256];
    // SAFETY: HEADER_SIZE + 256 <= SIZE; the child has exited, so nobody writes the bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(seg.as_ptr().add(HEADER_SIZE), text.as_mut_ptr(), text.len())
    };
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    println!("parent read back: {:?}", String::from_utf8_lossy(&text[..end]));
    drop(seg);
    println!("removed {name}");
    Ok(())
}

pub fn run_child(args: &ChildArgs) -> CliResult {
    let seg = Segment::open(&args.target, &Options::default())
        .context(format!("cannot open {}", args.target))?;
    layout::validate(&seg).context(format!("{} has no valid header", args.target))?;
    let msg = format!(
        "hello from pid {}, which mapped the segment at {:p}\0",
        std::process::id(),
        seg.as_ptr()
    );
    println!(
        "child pid {}: opened {} at virtual address {:p}",
        std::process::id(),
        args.target,
        seg.as_ptr()
    );
    let n = msg.len().min(256);
    // SAFETY: HEADER_SIZE + 256 <= the segment's size (validated header, SIZE bytes).
    unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), seg.as_ptr().add(HEADER_SIZE), n) };
    Ok(())
}
