//! `shmkit soak`: streams N sequence-numbered, checksummed messages through a channel to
//! a second process that verifies every one, and reports loss, duplication,
//! reordering and corruption (all must be zero) and the rate.

use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use shmkit::channel::spsc::Config;
use shmkit::channel::{Receiver, Sender, WaitStrategy};
use shmkit::Name;

use crate::stats::rate;
use crate::util::{fail, parse_size, print_json, CliResult, Context, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Messages to send.
    #[arg(long, short = 'n', default_value = "10000000")]
    messages: u64,
    /// Message sizes, used in turn (each at least 0 bytes; sizes of 16 and more carry a
    /// checksum of the payload).
    #[arg(long, default_value = "64,256,16,1K", value_delimiter = ',', value_parser = parse_size)]
    sizes: Vec<u64>,
    /// Ring capacity.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    capacity: u64,
    /// How both sides wait.
    #[arg(long, default_value = "adaptive")]
    wait: WaitStrategy,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    channel: Name,
    #[arg(long)]
    messages: u64,
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<u64>,
    #[arg(long)]
    wait: WaitStrategy,
}

/// What the verifying side counted.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupt: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    messages: u64,
    bytes: u64,
    seconds: f64,
    messages_per_sec: f64,
    bytes_per_sec: f64,
    #[serde(flatten)]
    tally: Tally,
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over 8-byte words (the tail byte by byte): cheap enough to check gigabytes.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x100_0000_01b3);
    }
    words.remainder().iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Message `seq`: its number (first 8 bytes, truncated for smaller sizes), a checksum
/// of the rest (bytes 8..16), then bytes derived from `seq`.
fn fill(seq: u64, size: usize, buf: &mut [u8]) {
    let seq_bytes = seq.to_le_bytes();
    let head = size.min(8);
    buf[..head].copy_from_slice(&seq_bytes[..head]);
    if size >= 16 {
        // xorshift64 from a mixed seed: every message's bytes differ, cheaply.
        let mut x = mix(seq) | 1;
        for chunk in buf[16..size].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let sum = fnv(&buf[16..size]);
        buf[8..16].copy_from_slice(&sum.to_le_bytes());
    } else if size > 8 {
        buf[8..size].fill(0xa5);
    }
}

pub fn run(args: &Args) -> CliResult {
    if args.sizes.is_empty() {
        return fail("--sizes needs at least one size");
    }
    let capacity =
        usize::try_from(args.capacity).map_err(|_| Failure("capacity too large".into()))?;
    let name = Name::Posix(format!("/shmkit.soak.{}", std::process::id()));
    // Registered first: a signal right after the creation must find it.
    let _created = crate::signals::created(&name);
    let mut tx = Sender::create(&name, &Config { capacity, ..Config::default() })
        .context(format!("cannot create {name}"))?;
    let max = *args.sizes.iter().max().unwrap_or(&0);
    if max as usize > tx.max_message() {
        return fail(format!(
            "size {max} exceeds the channel's maximum message ({}); raise --capacity",
            tx.max_message()
        ));
    }
    tx.set_wait_strategy(args.wait);
    let sizes: Vec<String> = args.sizes.iter().map(u64::to_string).collect();
    let exe = std::env::current_exe().context("cannot find the shmkit executable")?;
    let mut verify = Command::new(exe);
    verify
        .args(["__soak-verify", &name.to_string(), "--messages", &args.messages.to_string()])
        .args(["--sizes", &sizes.join(","), "--wait", &args.wait.to_string()])
        .stdout(Stdio::piped());
    let (child, _verifier) =
        crate::signals::spawn(&mut verify).context("cannot start the verifying process")?;
    let mut progress = crate::progress::Progress::new("soak", args.messages, false);
    let mut buf = vec![0u8; max as usize];
    let mut bytes = 0u64;
    let start = Instant::now();
    for seq in 0..args.messages {
        let size = args.sizes[(seq % args.sizes.len() as u64) as usize] as usize;
        fill(seq, size, &mut buf);
        tx.send(&buf[..size]).map_err(|e| Failure(format!("soak: send {seq}: {e}")))?;
        bytes += size as u64;
        if seq % 65536 == 0 {
            progress.update(seq, || "messages sent".into());
        }
    }
    drop(tx);
    let out = child.wait_with_output().context("waiting for the verifier")?;
    let seconds = start.elapsed().as_secs_f64();
    progress.finish();
    if !out.status.success() {
        return fail(format!("the verifying process failed: {}", out.status));
    }
    let tally: Tally = serde_json::from_slice(&out.stdout).context("the verifier's report")?;
    let report = Report {
        messages: args.messages,
        bytes,
        seconds,
        messages_per_sec: args.messages as f64 / seconds,
        bytes_per_sec: bytes as f64 / seconds,
        tally,
    };
    let bad =
        report.tally.lost + report.tally.duplicated + report.tally.reordered + report.tally.corrupt;
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "soak: {} messages ({} bytes) in {:.2} s: {}msg/s, {}B/s; received {}, lost {}, duplicated {}, reordered {}, corrupt {}",
            report.messages,
            report.bytes,
            report.seconds,
            rate(report.messages_per_sec),
            rate(report.bytes_per_sec),
            report.tally.received,
            report.tally.lost,
            report.tally.duplicated,
            report.tally.reordered,
            report.tally.corrupt
        );
    }
    if bad > 0 || report.tally.received != args.messages {
        return fail(format!("soak found {bad} bad messages"));
    }
    Ok(())
}

/// The verifying side: receives until the sender closes, checks every message.
pub fn run_child(args: &ChildArgs) -> CliResult {
    let mut rx = Receiver::open(&args.channel).context(format!("cannot open {}", args.channel))?;
    rx.set_wait_strategy(args.wait);
    let mut tally = Tally::default();
    let mut expected = 0u64;
    let mut want = vec![0u8; *args.sizes.iter().max().unwrap_or(&0) as usize];
    loop {
        let msg = match rx.recv_ref() {
            Ok(m) => m,
            Err(e) if e.is_disconnected() => break,
            Err(e) => return fail(format!("soak verifier: {e}")),
        };
        tally.received += 1;
        let size = msg.len();
        // The sequence number the message carries (its low bytes, for short messages).
        let mut seq_bytes = [0u8; 8];
        seq_bytes[..size.min(8)].copy_from_slice(&msg[..size.min(8)]);
        let mut seq = u64::from_le_bytes(seq_bytes);
        if size < 8 {
            // Only the low bytes travelled: complete them from what we expect.
            let mask = (1u64 << (8 * size)) - 1;
            seq = (expected & !mask) | (seq & mask);
        }
        match seq.cmp(&expected) {
            std::cmp::Ordering::Equal => expected += 1,
            std::cmp::Ordering::Greater => {
                tally.lost += seq - expected;
                tally.reordered += 1;
                expected = seq + 1;
            }
            std::cmp::Ordering::Less => tally.duplicated += 1,
        }
        let want_size = args.sizes[(seq % args.sizes.len() as u64) as usize] as usize;
        if size != want_size {
            tally.corrupt += 1;
            continue;
        }
        fill(seq, size, &mut want);
        if msg[..] != want[..size] {
            tally.corrupt += 1;
        }
    }
    if expected < args.messages {
        tally.lost += args.messages - expected;
    }
    drop(rx);
    print_json(&tally)
}

/// For tests of `soak` itself: nothing here is timing-dependent.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_deterministic_and_checksummed() {
        let (mut a, mut b) = (vec![0u8; 100], vec![0u8; 100]);
        fill(7, 100, &mut a);
        fill(7, 100, &mut b);
        assert_eq!(a, b);
        assert_eq!(u64::from_le_bytes(a[..8].try_into().unwrap()), 7);
        assert_eq!(u64::from_le_bytes(a[8..16].try_into().unwrap()), fnv(&a[16..]));
        fill(8, 100, &mut b);
        assert_ne!(a, b);
    }
}
