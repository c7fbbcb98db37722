//! `shmkit ls`: every SysV and POSIX shared-memory segment on the machine, in the style
//! of `lsipc -m`/`ipcs -m`, with shmkit's header fields where a segment has them.

use serde::Serialize;
use shmkit::segment::sysv;
use shmkit::Name;

use crate::inspect::{self, View};
use crate::util::{print_json, print_table, size_cell, time_cell, user_name, CliResult, Context};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print sizes in bytes instead of human-readable units.
    #[arg(long, short)]
    bytes: bool,
    /// List only shmkit segments.
    #[arg(long)]
    shmkit: bool,
}

#[derive(Debug, Serialize)]
pub struct SysvRow {
    /// `0x%08x`, like ipcs.
    pub key: String,
    pub shmid: i32,
    pub owner: String,
    pub uid: u32,
    /// Octal permission bits, e.g. `0600`.
    pub perms: String,
    pub bytes: u64,
    pub nattch: u64,
    pub cpid: u32,
    pub lpid: u32,
    /// `dest` (removed, waiting for the last detach), `locked`, or empty.
    pub status: String,
    /// The target to give other commands.
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<View>,
}

#[derive(Debug, Serialize)]
pub struct PosixRow {
    pub name: String,
    pub owner: String,
    pub uid: u32,
    pub perms: String,
    pub bytes: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<View>,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub sysv: Vec<SysvRow>,
    pub posix: Vec<PosixRow>,
}

pub fn run(args: &Args) -> CliResult {
    let mut listing = Listing { sysv: sysv_rows()?, posix: posix_rows()? };
    if args.shmkit {
        listing.sysv.retain(|r| r.view.as_ref().is_some_and(|v| v.shmkit));
        listing.posix.retain(|r| r.view.as_ref().is_some_and(|v| v.shmkit));
    }
    if args.json {
        return print_json(&listing);
    }
    println!("System V shared memory segments");
    let rows: Vec<Vec<String>> = listing
        .sysv
        .iter()
        .map(|r| {
            vec![
                r.key.clone(),
                r.shmid.to_string(),
                r.owner.clone(),
                r.perms.clone(),
                size_cell(r.bytes, args.bytes),
                r.nattch.to_string(),
                r.cpid.to_string(),
                r.lpid.to_string(),
                if r.status.is_empty() { "-".into() } else { r.status.clone() },
                r.view.as_ref().map_or("?".into(), View::summary),
            ]
        })
        .collect();
    print_table(
        &["KEY", "ID", "OWNER", "PERMS", "SIZE", "NATTCH", "CPID", "LPID", "STATUS", "SHMKIT"],
        &rows,
    );
    println!();
    println!("POSIX shared memory (/dev/shm)");
    let rows: Vec<Vec<String>> = listing
        .posix
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.owner.clone(),
                r.perms.clone(),
                size_cell(r.bytes, args.bytes),
                time_cell(r.mtime),
                r.view.as_ref().map_or("?".into(), View::summary),
            ]
        })
        .collect();
    print_table(&["NAME", "OWNER", "PERMS", "SIZE", "MODIFIED", "SHMKIT"], &rows);
    Ok(())
}

/// Every SysV segment (from `/proc/sysvipc/shm`, via the library).
pub fn sysv_rows() -> CliResult<Vec<SysvRow>> {
    let mut rows = Vec::new();
    for st in sysv::list().context("listing SysV segments")? {
        let mut status = Vec::new();
        if st.mode & sysv::MODE_DEST != 0 {
            status.push("dest");
        }
        if st.mode & sysv::MODE_LOCKED != 0 {
            status.push("locked");
        }
        let name = Name::SysVId(st.id);
        let view = inspect::inspect_listed(&name, st.size);
        rows.push(SysvRow {
            key: format!("0x{:08x}", st.key as u32),
            shmid: st.id,
            owner: user_name(st.uid),
            uid: st.uid,
            perms: format!("{:04o}", st.mode & 0o777),
            bytes: st.size,
            nattch: st.nattch,
            cpid: st.cpid,
            lpid: st.lpid,
            status: status.join(","),
            target: if st.key == 0 { name.to_string() } else { Name::SysVKey(st.key).to_string() },
            view,
        });
    }
    Ok(rows)
}

/// Regular files in `/dev/shm`, except POSIX semaphores (`sem.*`).
pub fn posix_rows() -> CliResult<Vec<PosixRow>> {
    use std::os::unix::fs::MetadataExt;
    let mut rows = Vec::new();
    let dir = match std::fs::read_dir("/dev/shm") {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(rows),
        Err(e) => return Err(e).context("reading /dev/shm"),
    };
    for entry in dir.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file() || file_name.starts_with("sem.") {
            continue;
        }
        let name = format!("/{file_name}");
        let target = Name::Posix(name.clone());
        let view = inspect::inspect_listed(&target, meta.len());
        rows.push(PosixRow {
            owner: user_name(meta.uid()),
            uid: meta.uid(),
            perms: format!("{:04o}", meta.mode() & 0o777),
            bytes: meta.len(),
            mtime: meta.mtime(),
            target: target.to_string(),
            name,
            view,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}
