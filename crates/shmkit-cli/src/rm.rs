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
    /// Print what was removed as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Removed {
    target: String,
    bytes: u64,
    /// Processes that still have it mapped (SysV only; they keep it until they detach).
    still_attached: u64,
}

pub fn run(args: &Args) -> CliResult {
    let mut failed = Vec::new();
    let mut removed = Vec::new();
    for target in &args.targets {
        match remove(target, args.force) {
            Ok(r) => {
                if !args.json {
                    if r.still_attached > 0 {
                        println!(
                            "removed {} ({} bytes); {} process(es) still attached keep it until they detach",
                            r.target, r.bytes, r.still_attached
                        );
                    } else {
                        println!("removed {} ({} bytes)", r.target, r.bytes);
                    }
                }
                removed.push(r);
            }
            Err(e) => {
                eprintln!("shmkit: {e}");
                failed.push(target.to_string());
            }
        }
    }
    if args.json {
        crate::util::print_json(&removed)?;
    }
    if failed.is_empty() {
        Ok(())
    } else {
        fail(format!("not removed: {}", failed.join(", ")))
    }
}

fn remove(target: &Name, force: bool) -> CliResult<Removed> {
    let seg = Segment::open(target, &Options { read_only: true, ..Options::default() })
        .context(format!("cannot open {target}"))?;
    if !force && !layout::has_magic(&seg) {
        return fail(format!("{target} is not a shmkit segment; use --force to remove it anyway"));
    }
    let d = seg.describe().context(format!("cannot describe {target}"))?;
    seg.remove().context(format!("cannot remove {target}"))?;
    let still = d.attach_count.map_or(0, |n| n.saturating_sub(1));
    Ok(Removed { target: target.to_string(), bytes: d.size, still_attached: still })
}
