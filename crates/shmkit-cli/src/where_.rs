//! `shmkit where <target>`: where each process maps a segment (from /proc/PID/maps),
//! and which physical page frames back it (from /proc/PID/pagemap, when permitted):
//! different virtual addresses, the same physical frames.

use std::os::unix::fs::MetadataExt;

use serde::Serialize;
use shmkit::Name;

use crate::util::{fail, print_json, CliResult, Context};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The segment: sysv:0xKEY, sysv-id:ID, posix:/NAME, file:PATH or ftok:PATH:PROJ.
    target: Name,
    /// Look only at these processes (default: every process that maps the segment).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Physical frames to show per mapping.
    #[arg(long, default_value = "4")]
    pages: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// How a mapping of the segment shows up in /proc/PID/maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ident {
    /// SysV: the "inode" column is the shmid, the path `/SYSV<key>`.
    SysV { id: u64 },
    /// POSIX and file: the device and inode of the backing file.
    Inode { dev_major: u64, dev_minor: u64, ino: u64 },
}

#[derive(Debug, Serialize)]
pub struct Mapping {
    pub pid: u32,
    pub command: String,
    pub start: u64,
    pub end: u64,
    pub perms: String,
    /// Physical frame number of each of the first pages: `None` if the page is not
    /// present in this process yet, `Some(0)` if the kernel hides frame numbers.
    pub frames: Vec<Option<u64>>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub mappings: Vec<Mapping>,
    /// Every mapping starts at its own virtual address.
    pub distinct_addresses: bool,
    /// Frame numbers could be read (root / CAP_SYS_ADMIN).
    pub frames_visible: bool,
    /// Every process's first present page is the same physical frame.
    pub same_frames: Option<bool>,
}

fn identify(name: &Name) -> CliResult<Ident> {
    let shown = name.to_string();
    let name = name.resolve()?;
    let stat_path = |p: &std::path::Path| -> CliResult<Ident> {
        // A missing name reads as everywhere else: "...: no such segment".
        let m = std::fs::metadata(p)
            .map_err(|e| shmkit::Error::io("stat", p.display(), e))
            .context(format!("cannot find {shown}"))?;
        let dev = m.dev();
        Ok(Ident::Inode {
            dev_major: libc::major(dev) as u64,
            dev_minor: libc::minor(dev) as u64,
            ino: m.ino(),
        })
    };
    match name {
        Name::SysVKey(key) => {
            // SAFETY: shmget takes no pointers.
            let id = unsafe { libc::shmget(key, 0, 0) };
            if id == -1 {
                return Err(shmkit::Error::last_os("shmget", format!("0x{:08x}", key as u32)))
                    .context("cannot find the segment");
            }
            Ok(Ident::SysV { id: id as u64 })
        }
        Name::SysVId(id) => Ok(Ident::SysV { id: id as u64 }),
        Name::Posix(n) => {
            stat_path(&std::path::Path::new("/dev/shm").join(n.trim_start_matches('/')))
        }
        Name::File(p) => stat_path(&p),
        Name::Ftok(..) => unreachable!("resolved"),
    }
}

/// Parses one /proc/PID/maps line: `start-end perms offset maj:min inode path`.
fn matches(line: &str, ident: Ident) -> Option<(u64, u64, String)> {
    let mut f = line.split_whitespace();
    let range = f.next()?;
    let perms = f.next()?.to_string();
    let _offset = f.next()?;
    let dev = f.next()?;
    let inode: u64 = f.next()?.parse().ok()?;
    let path = f.next().unwrap_or("");
    let (start, end) = range.split_once('-')?;
    let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
    let hit = match ident {
        Ident::SysV { id } => inode == id && path.starts_with("/SYSV"),
        Ident::Inode { dev_major, dev_minor, ino } => {
            let (ma, mi) = dev.split_once(':')?;
            inode == ino
                && u64::from_str_radix(ma, 16).ok()? == dev_major
                && u64::from_str_radix(mi, 16).ok()? == dev_minor
        }
    };
    hit.then_some((start, end, perms))
}

/// Frame numbers of the first `pages` pages at `start` in `pid`.
fn frames(pid: u32, start: u64, end: u64, pages: usize) -> Vec<Option<u64>> {
    use std::os::unix::fs::FileExt;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let Ok(file) = std::fs::File::open(format!("/proc/{pid}/pagemap")) else {
        return vec![Some(0); pages.min(((end - start) / page) as usize)];
    };
    (0..((end - start) / page).min(pages as u64))
        .map(|i| {
            let mut b = [0u8; 8];
            file.read_exact_at(&mut b, (start / page + i) * 8).ok()?;
            let entry = u64::from_le_bytes(b);
            // Bit 63: present; bits 0-54: frame number (zero without CAP_SYS_ADMIN).
            (entry >> 63 == 1).then_some(entry & ((1 << 55) - 1))
        })
        .collect()
}

/// Finds the mappings of `target` in `pids` (or every process).
pub fn report(target: &Name, pids: &[u32], pages: usize) -> CliResult<Report> {
    let ident = identify(target)?;
    let pids: Vec<u32> = if pids.is_empty() {
        std::fs::read_dir("/proc")
            .context("reading /proc")?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    } else {
        pids.to_vec()
    };
    let mut mappings = Vec::new();
    for pid in pids {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { continue };
        for line in maps.lines() {
            if let Some((start, end, perms)) = matches(line, ident) {
                mappings.push(Mapping {
                    pid,
                    command: crate::util::command_name(pid).unwrap_or_default(),
                    start,
                    end,
                    perms,
                    frames: frames(pid, start, end, pages),
                });
            }
        }
    }
    let mut starts: Vec<u64> = mappings.iter().map(|m| m.start).collect();
    starts.sort_unstable();
    starts.dedup();
    let present: Vec<u64> =
        mappings.iter().filter_map(|m| m.frames.first().copied().flatten()).collect();
    let frames_visible = present.iter().any(|&f| f != 0);
    let same_frames =
        (frames_visible && present.len() >= 2).then(|| present.windows(2).all(|w| w[0] == w[1]));
    Ok(Report {
        target: target.to_string(),
        distinct_addresses: starts.len() == mappings.len(),
        frames_visible,
        same_frames,
        mappings,
    })
}

pub fn print(r: &Report) {
    println!("{}: mapped by {} process(es)", r.target, r.mappings.len());
    let rows: Vec<Vec<String>> = r
        .mappings
        .iter()
        .map(|m| {
            let frames: Vec<String> = m
                .frames
                .iter()
                .map(|f| match f {
                    None => "-".into(),
                    Some(0) => "?".into(),
                    Some(pfn) => format!("{pfn:#x}"),
                })
                .collect();
            vec![
                m.pid.to_string(),
                m.command.clone(),
                format!("{:012x}-{:012x}", m.start, m.end),
                m.perms.clone(),
                frames.join(" "),
            ]
        })
        .collect();
    crate::util::print_table(
        &["PID", "COMMAND", "VIRTUAL ADDRESSES", "PERMS", "PHYSICAL FRAMES (first pages)"],
        &rows,
    );
    if r.mappings.len() >= 2 {
        println!(
            "virtual addresses: {}",
            if r.distinct_addresses {
                "different in every process"
            } else {
                "some processes use the same address"
            }
        );
    }
    match r.same_frames {
        Some(true) => println!("physical frames:   the same in every process: one physical segment"),
        Some(false) => println!("physical frames:   DIFFER (copy-on-write or a private mapping?)"),
        None if !r.frames_visible && !r.mappings.is_empty() => println!(
            "physical frames:   hidden: /proc/PID/pagemap shows frame numbers only to CAP_SYS_ADMIN (run as root)"
        ),
        None => {}
    }
    if r.mappings.iter().any(|m| m.frames.iter().any(Option::is_none)) {
        println!("('-': page not touched yet in that process, so not mapped to a frame there)");
    }
}

pub fn run(args: &Args) -> CliResult {
    let r = report(&args.target, &args.pids, args.pages)?;
    if args.json {
        return print_json(&r);
    }
    if r.mappings.is_empty() {
        return fail(format!(
            "{}: no process maps it{}",
            args.target,
            if args.pids.is_empty() { "" } else { " among the given pids" }
        ));
    }
    print(&r);
    Ok(())
}
