//! `shmkit dump` (an `xxd`-style hex dump) and `shmkit write` (patch bytes): raw
//! inspection of any segment, shmkit's or not.

use std::io::Write;

use shmkit::{Name, Options, Segment};

use crate::util::{fail, parse_count, CliResult, Context};

#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// The segment: sysv:0xKEY, sysv-id:ID, posix:/NAME, file:PATH or ftok:PATH:PROJ.
    target: Name,
    /// First byte to show.
    #[arg(long, default_value = "0", value_parser = parse_count)]
    offset: u64,
    /// Number of bytes to show (default: to the end).
    #[arg(long, value_parser = parse_count)]
    len: Option<u64>,
    /// Show every line; by default runs of all-zero lines are squeezed into `*`.
    #[arg(long, short)]
    all: bool,
    /// Print `{"offset": N, "len": N, "hex": "..."}` instead of a dump.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("data").required(true).args(["hex", "text"])))]
pub struct WriteArgs {
    /// The segment: sysv:0xKEY, sysv-id:ID, posix:/NAME, file:PATH or ftok:PATH:PROJ.
    target: Name,
    /// Where to write.
    #[arg(long, value_parser = parse_count)]
    offset: u64,
    /// Bytes as hex, spaces allowed: "de ad be ef".
    #[arg(long)]
    hex: Option<String>,
    /// Bytes as UTF-8 text (no terminating NUL is added).
    #[arg(long)]
    text: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Copies `len` bytes at `offset` out of the segment.
fn read_bytes(seg: &Segment, offset: usize, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    // SAFETY: the caller checked offset + len <= seg.len(); the bytes may change under
    // us, so they are copied out through a raw pointer rather than borrowed.
    unsafe { std::ptr::copy_nonoverlapping(seg.as_ptr().add(offset), buf.as_mut_ptr(), len) };
    buf
}

fn check_range(seg: &Segment, target: &Name, offset: u64, len: u64) -> CliResult<(usize, usize)> {
    let size = seg.len() as u64;
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok((offset as usize, len as usize)),
        _ => fail(format!("{target}: range {offset}+{len} is outside the segment ({size} bytes)")),
    }
}

pub fn run_dump(args: &DumpArgs) -> CliResult {
    let seg = Segment::open(&args.target, &Options { read_only: true, ..Options::default() })
        .context(format!("cannot open {}", args.target))?;
    let size = seg.len() as u64;
    if args.offset > size {
        return fail(format!(
            "{}: offset {} is past the end ({size} bytes)",
            args.target, args.offset
        ));
    }
    let len = args.len.unwrap_or(size - args.offset);
    let (offset, len) = check_range(&seg, &args.target, args.offset, len)?;
    if args.json {
        let hex: String =
            read_bytes(&seg, offset, len).iter().map(|b| format!("{b:02x}")).collect();
        return crate::util::print_json(&serde_json::json!({
            "target": args.target.to_string(), "offset": offset, "len": len, "hex": hex,
        }));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut squeezed = false;
    for start in (offset..offset + len).step_by(16) {
        let line = read_bytes(&seg, start, 16.min(offset + len - start));
        let zero = line.len() == 16 && line.iter().all(|&b| b == 0);
        if zero && !args.all && start != offset && start + 16 < offset + len {
            if !squeezed {
                writeln!(out, "*")?;
                squeezed = true;
            }
            continue;
        }
        squeezed = false;
        writeln!(out, "{}", xxd_line(start, &line))?;
    }
    out.flush()?;
    Ok(())
}

/// `00000000: 5348 4d4b 4954 0001 0100 0000 8000 0000  SHMKIT..........`
pub fn xxd_line(offset: usize, bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(40);
    for i in 0..16 {
        match bytes.get(i) {
            Some(b) => hex.push_str(&format!("{b:02x}")),
            None => hex.push_str("  "),
        }
        if i % 2 == 1 {
            hex.push(' ');
        }
    }
    let text: String =
        bytes.iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' }).collect();
    format!("{offset:08x}: {hex} {text}")
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = s.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    let digits = digits.strip_prefix("0x").unwrap_or(&digits);
    if digits.len() % 2 != 0 {
        return Err(format!("{s:?}: odd number of hex digits"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|_| format!("{s:?} is not hex")))
        .collect()
}

pub fn run_write(args: &WriteArgs) -> CliResult {
    let data = match (&args.hex, &args.text) {
        (Some(h), _) => parse_hex(h).map_err(crate::util::Failure)?,
        (None, Some(t)) => t.as_bytes().to_vec(),
        (None, None) => return fail("give --hex or --text"),
    };
    let seg = Segment::open(&args.target, &Options::default())
        .context(format!("cannot open {}", args.target))?;
    let (offset, len) = check_range(&seg, &args.target, args.offset, data.len() as u64)?;
    // SAFETY: offset + len <= seg.len() (checked); the mapping is writable; raw copy,
    // since other processes may access the bytes concurrently.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), seg.as_ptr().add(offset), len) };
    if args.json {
        return crate::util::print_json(&serde_json::json!({
            "target": args.target.to_string(), "offset": offset, "written": len,
        }));
    }
    println!("wrote {len} bytes at offset {offset} to {}", args.target);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_xxd() {
        assert_eq!(
            xxd_line(0x10, b"SHMKIT\0\x01abc"),
            "00000010: 5348 4d4b 4954 0001 6162 63              SHMKIT..abc"
        );
        assert_eq!(parse_hex("de ad:BE ef"), Ok(vec![0xde, 0xad, 0xbe, 0xef]));
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }
}
