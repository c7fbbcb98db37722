//! `shmkit create`: makes a named segment with a shmkit header (or raw, with
//! `--no-header`) and leaves it in place.

use std::path::PathBuf;

use serde::Serialize;
use shmkit::layout::{self, ObjectKind};
use shmkit::segment::Description;
use shmkit::{Name, Options, Segment};

use crate::util::{fail, parse_mode, parse_size, print_json, CliResult, Context};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["key", "ftok", "posix", "file"])))]
pub struct Args {
    /// System V segment: implied by --key and --ftok (accepted with them, refused
    /// with --posix or --file).
    #[arg(long, conflicts_with_all = ["posix", "file"])]
    sysv: bool,
    /// SysV key, e.g. 0x2a00c172.
    #[arg(long, value_parser = parse_key_arg)]
    key: Option<i32>,
    /// SysV key derived by ftok(PATH, ID), e.g. /tmp/example:42.
    #[arg(long, value_name = "PATH:ID")]
    ftok: Option<String>,
    /// POSIX name, e.g. /shmkit.demo.
    #[arg(long, value_name = "NAME")]
    posix: Option<String>,
    /// File to create and map.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Size, e.g. 4096, 64K, 1M.
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// Permission bits (octal).
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    mode: u32,
    /// Group of the new segment, by name or number: with a mode such as 0660 the
    /// group's users share it (applied before the mode).
    #[arg(long, value_name = "GROUP", value_parser = crate::util::parse_group)]
    group: Option<u32>,
    /// Open the segment if it already exists instead of failing.
    #[arg(long)]
    open_existing: bool,
    /// Leave the bytes raw (all zero) instead of writing a shmkit header.
    #[arg(long)]
    no_header: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_key_arg(s: &str) -> Result<i32, String> {
    match shmkit::segment::parse_key(s) {
        Some(0) => Err("key 0 is IPC_PRIVATE".into()),
        Some(k) => Ok(k),
        None => Err(format!("{s:?} is not a 32-bit key")),
    }
}

#[derive(Debug, Serialize)]
struct Created {
    target: String,
    shmid: Option<i32>,
    segment: Description,
    header: bool,
}

pub fn run(args: &Args) -> CliResult {
    let name = if let Some(key) = args.key {
        Name::SysVKey(key)
    } else if let Some(spec) = &args.ftok {
        let parsed: Name =
            format!("ftok:{spec}").parse().map_err(|e| crate::util::Failure(format!("{e}")))?;
        parsed.resolve().context(format!("ftok {spec}"))?
    } else if let Some(p) = &args.posix {
        Name::Posix(p.clone())
    } else if let Some(f) = &args.file {
        Name::File(f.clone())
    } else {
        return fail("no segment kind given");
    };
    let size =
        usize::try_from(args.size).map_err(|_| crate::util::Failure("size too large".into()))?;
    if !args.no_header && size < layout::HEADER_SIZE {
        return fail(format!(
            "a shmkit segment needs at least {} bytes (or use --no-header)",
            layout::HEADER_SIZE
        ));
    }
    let opts = Options {
        mode: args.mode,
        open_existing: args.open_existing,
        group: args.group,
        ..Options::default()
    };
    let seg = Segment::create(&name, size, &opts).context(format!("cannot create {name}"))?;
    let fresh = seg.is_owned();
    if !args.no_header && fresh {
        let h = layout::init(&seg, ObjectKind::Raw, 0, &[layout::HEADER_SIZE as u64])
            .context(format!("cannot write the header of {name}"))?;
        layout::publish(h);
    }
    seg.persist();
    let created = Created {
        target: seg.name().unwrap_or(name).to_string(),
        shmid: seg.sysv_id(),
        segment: seg.describe()?,
        header: !args.no_header && fresh,
    };
    if args.json {
        return print_json(&created);
    }
    let verb = if fresh { "created" } else { "opened existing" };
    let id = created.shmid.map_or(String::new(), |id| format!(", shmid {id}"));
    println!(
        "{verb} {}{id}: {} bytes, mode {:04o}{}",
        created.target,
        created.segment.size,
        created.segment.mode,
        if created.header { ", shmkit header" } else { "" }
    );
    Ok(())
}
