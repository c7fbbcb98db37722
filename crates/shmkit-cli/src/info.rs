//! `shmkit info <target>`: everything known about one segment.

use serde::Serialize;
use shmkit::layout::state;
use shmkit::segment::Description;
use shmkit::{Name, Options, Segment};

use crate::inspect::{self, View};
use crate::util::{human_size, print_json, time_cell, user_name, CliResult, Context};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The segment: sysv:0xKEY, sysv-id:ID, posix:/NAME, file:PATH or ftok:PATH:PROJ.
    target: Name,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Info {
    target: String,
    segment: Description,
    #[serde(flatten)]
    view: View,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<crate::channel_view::ObjectView>,
    /// How a waiting end on this machine learns that its peer died: "pidfd" (an
    /// event) or "watchdog" (a 10 ms tick, where pidfds are unavailable).
    death_detection: &'static str,
}

pub fn run(args: &Args) -> CliResult {
    let seg = Segment::open(&args.target, &Options { read_only: true, ..Options::default() })
        .context(format!("cannot open {}", args.target))?;
    let view = inspect::inspect(&seg);
    let object = view.header.as_ref().map(|h| crate::channel_view::object_view(&seg, h));
    let info = Info {
        target: args.target.to_string(),
        segment: seg.describe().context(format!("cannot describe {}", args.target))?,
        view,
        object,
        death_detection: shmkit::sync::pidwatch::mechanism(),
    };
    if args.json {
        return print_json(&info);
    }
    let d = &info.segment;
    let mut out = vec![
        ("target", info.target.clone()),
        ("kind", d.kind.to_string()),
        ("name", d.name.clone()),
        ("size", format!("{} ({})", d.size, human_size(d.size))),
        ("mode", format!("{:04o}", d.mode)),
        ("owner", format!("{} (uid {}, gid {})", user_name(d.uid), d.uid, d.gid)),
        ("changed", time_cell(d.changed)),
    ];
    if let Some(n) = d.attach_count {
        out.push(("attached", n.to_string()));
    }
    if let Some(p) = d.creator_pid {
        out.push(("creator pid", p.to_string()));
    }
    if let Some(p) = d.last_pid {
        out.push(("last pid", p.to_string()));
    }
    if d.removed {
        out.push(("status", "removed, waiting for the last detach".into()));
    }
    match &info.view.header {
        Some(h) => {
            out.push(("shmkit", "yes".into()));
            out.push(("object", h.object.name().into()));
            out.push(("layout version", h.version.to_string()));
            out.push(("state", state::name(h.state).into()));
            let alive = match info.view.creator_alive {
                Some(true) => "alive",
                Some(false) => "dead",
                None => "liveness unknown",
            };
            let foreign = crate::channel_view::foreign_note(h.creator_is_foreign());
            out.push(("created by", format!("pid {}{foreign} ({alive})", h.creator_pid)));
            out.push(("created at", time_cell((h.created_ns / 1_000_000_000) as i64)));
            out.push(("header size", h.header_size.to_string()));
            if let Some(object) = &info.object {
                out.extend(crate::channel_view::lines(object));
            }
            // Only objects with ends that wait on each other.
            if h.object.name() != "raw" {
                out.push((
                    "death detection",
                    match info.death_detection {
                        "pidfd" => "pidfd (the kernel's exit event; parked ends never tick)".into(),
                        other => format!("{other} (a 10 ms tick: pidfd_open is unavailable here)"),
                    },
                ));
            }
        }
        None => out
            .push(("shmkit", format!("no: {}", info.view.invalid.as_deref().unwrap_or("unknown")))),
    }
    let width = out.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in out {
        println!("{:<width$} {v}", format!("{k}:"));
    }
    Ok(())
}
