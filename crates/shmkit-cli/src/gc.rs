//! `shmkit gc`: removes shmkit segments left behind by dead processes.

use shmkit::gc::GcOptions;

use crate::util::{print_json, print_table, CliResult, Context};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Say what would be removed; remove nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Also remove dead plain segments made by `shmkit create`.
    #[arg(long)]
    include_raw: bool,
    /// Also list the shmkit segments that are kept, and why.
    #[arg(long, short)]
    verbose: bool,
    /// Print JSON (every segment looked at).
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> CliResult {
    let verdicts =
        shmkit::gc::gc(&GcOptions { dry_run: args.dry_run, include_raw: args.include_raw })
            .context("gc")?;
    if args.json {
        return print_json(&verdicts);
    }
    let shown: Vec<_> = verdicts.iter().filter(|v| v.garbage || args.verbose).collect();
    if shown.is_empty() {
        println!("nothing to remove ({} shmkit segment(s) in use)", verdicts.len());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|v| {
            let action = match (v.garbage, v.removed, args.dry_run) {
                (false, _, _) => "kept",
                (true, _, true) => "would remove",
                (true, true, false) => "removed",
                (true, false, false) => "FAILED",
            };
            vec![
                action.into(),
                v.target.clone(),
                v.object.clone(),
                v.bytes.to_string(),
                v.reason.clone(),
            ]
        })
        .collect();
    print_table(&["ACTION", "TARGET", "OBJECT", "BYTES", "WHY"], &rows);
    Ok(())
}
