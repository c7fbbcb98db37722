//! `shmkit rm <target>...`: removes segments, refusing foreign ones without `--force`.

use shmkit::{layout, Name, Options, Segment};

use crate::util::{fail, CliResult, Context};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Segments to remove: sysv:0xKEY, sysv-id:ID, posix:/NAME, file:PATH or ftok:PATH:PROJ.
    #[arg(required = true)]
    targets: Vec<Name>,
    /// Remove segments that are not shmkit's too (like `ipcrm`).
    #[arg(long, short)]
    force: bool,
}

pub fn run(args: &Args) -> CliResult {
    let mut failed = Vec::new();
    for target in &args.targets {
        if let Err(e) = remove(target, args.force) {
            eprintln!("shmkit: {e}");
            failed.push(target.to_string());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        fail(format!("not removed: {}", failed.join(", ")))
    }
}

fn remove(target: &Name, force: bool) -> CliResult {
    let seg = Segment::open(target, &Options { read_only: true, ..Options::default() })
        .context(format!("cannot open {target}"))?;
    if !force && !layout::has_magic(&seg) {
        return fail(format!("{target} is not a shmkit segment; use --force to remove it anyway"));
    }
    let d = seg.describe().context(format!("cannot describe {target}"))?;
    seg.remove().context(format!("cannot remove {target}"))?;
    let still = d.attach_count.map_or(0, |n| n.saturating_sub(1));
    if still > 0 {
        println!("removed {target} ({} bytes); {still} process(es) still attached keep it until they detach", d.size);
    } else {
        println!("removed {target} ({} bytes)", d.size);
    }
    Ok(())
}
