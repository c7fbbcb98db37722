//! `shmkit-bridge-bench`: the bridge against plain Zenoh, in one run.
//!
//! * **zenoh**: process P publishes on `bench/req` and subscribes to `bench/rep`;
//!   process Q answers each request (latency) or counts them (throughput). Zenoh
//!   peers over TCP on 127.0.0.1, congestion control *block*.
//! * **bridged**: P publishes on a shmkit broadcast channel on "host A", bridge A
//!   exports it, bridge B imports it into a channel on "host B" where Q reads it, and
//!   Q's answers travel back the same way (bridge B exports, bridge A imports).
//!
//! Latency is one way (round trip / 2), medians of `--rounds` runs interleaved
//! zenoh/bridged; throughput is messages delivered per second at Q (P streams, Q acks
//! the last). Run: `cargo run --profile bridge-bench -p shmkit-zenoh --bin
//! shmkit-bridge-bench` (docs/PERFORMANCE.md, "Across hosts").

#![warn(clippy::undocumented_unsafe_blocks)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use shmkit::channel::broadcast::{Config, Overflow, Publisher, RecvError, Subscriber};
use shmkit::channel::WaitStrategy;
use shmkit::{Error, Name, Options, Segment};
use zenoh::handlers::FifoChannel;
use zenoh::qos::CongestionControl;
use zenoh::Wait;

#[derive(Parser, Debug)]
#[command(name = "shmkit-bridge-bench", about = "shmkit-bridge against plain Zenoh, in one run")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Message sizes, comma-separated (bytes).
    #[arg(long, default_value = "64,65536", value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Round trips per latency measurement.
    #[arg(long, default_value = "2000")]
    trips: u64,
    /// Interleaved rounds (zenoh, bridged, zenoh, ...); medians are reported.
    #[arg(long, default_value = "5")]
    rounds: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Messages per throughput measurement (default: 1000000 up to 1 KiB, 20000 above:
    /// about a second each here, long enough for the rate to settle).
    #[arg(long)]
    stream: Option<u64>,
    /// Measure only these paths (`zenoh`, `bridged`; for profiling one of them).
    #[arg(long, default_value = "zenoh,bridged", value_delimiter = ',')]
    only: Vec<String>,
    /// How the shmkit ends of the bridged path wait (`spin`, `block`, `adaptive[:US[:Y]]`).
    #[arg(long, default_value_t = WaitStrategy::default())]
    wait: WaitStrategy,
    /// How the bridges wait on their local channels (their `--wait`).
    #[arg(long, default_value_t = WaitStrategy::default())]
    bridge_wait: WaitStrategy,
    /// Pin "host A" (P and bridge A) to one CPU and "host B" (Q and bridge B) to
    /// another, e.g. `0,1`: each side of the link then has a CPU of its own, as on two
    /// machines. Unpinned, the four processes share every CPU.
    #[arg(long, value_name = "CPU_A,CPU_B", value_parser = parse_pin)]
    pin: Option<[usize; 2]>,
    /// Measure only these (`latency`, `throughput`).
    #[arg(long, default_value = "latency,throughput", value_delimiter = ',')]
    modes: Vec<String>,
    /// Slots of each shmkit channel on the bridged path (a power of two).
    #[arg(long, default_value = "256", value_parser = parse_slots)]
    slots: u64,
}

fn parse_slots(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n.is_power_of_two() && (2..=1 << 24).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: expected a power of two from 2 to 2^24")),
    }
}

#[derive(Subcommand, Debug)]
enum Role {
    #[command(hide = true)]
    Ping(PeerArgs),
    #[command(hide = true)]
    Pong(PeerArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct PeerArgs {
    /// `zenoh` or `shm`.
    #[arg(long)]
    via: String,
    #[arg(long)]
    endpoint: String,
    #[arg(long)]
    size: usize,
    /// `latency` or `throughput`.
    #[arg(long)]
    mode: String,
    #[arg(long)]
    count: u64,
    /// shm: the channel to publish on / subscribe to.
    #[arg(long)]
    out: Option<String>,
    #[arg(long = "in")]
    input: Option<String>,
    #[arg(long, default_value_t = WaitStrategy::default())]
    wait: WaitStrategy,
    #[arg(long, default_value = "256")]
    slots: u64,
}

/// One side's ends: publish a message, receive the next.
trait Ends {
    fn send(&mut self, msg: &[u8]);
    fn recv(&mut self, buf: &mut Vec<u8>);
    /// False if nothing came within `t`.
    fn recv_timeout(&mut self, buf: &mut Vec<u8>, t: Duration) -> bool;
}

struct ZenohEnds {
    publisher: zenoh::pubsub::Publisher<'static>,
    subscriber:
        zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
    _session: zenoh::Session,
}

impl Ends for ZenohEnds {
    fn send(&mut self, msg: &[u8]) {
        self.publisher.put(msg.to_vec()).wait().expect("zenoh put");
    }
    fn recv(&mut self, buf: &mut Vec<u8>) {
        let sample = self.subscriber.recv().expect("zenoh recv");
        buf.clear();
        buf.extend_from_slice(&sample.payload().to_bytes());
    }
    fn recv_timeout(&mut self, buf: &mut Vec<u8>, t: Duration) -> bool {
        match self.subscriber.recv_timeout(t).expect("zenoh recv") {
            Some(sample) => {
                buf.clear();
                buf.extend_from_slice(&sample.payload().to_bytes());
                true
            }
            None => false,
        }
    }
}

struct ShmEnds {
    publisher: Publisher,
    subscriber: Subscriber,
}

impl Ends for ShmEnds {
    fn send(&mut self, msg: &[u8]) {
        self.publisher.send(msg).map_err(|e| e.without_message()).expect("shmkit send");
    }
    fn recv(&mut self, buf: &mut Vec<u8>) {
        match self.subscriber.recv(buf) {
            Ok(_) => {}
            Err(RecvError::Lagged { .. }) => panic!("lost messages under backpressure"),
            Err(e) => panic!("shmkit recv: {e}"),
        }
    }
    fn recv_timeout(&mut self, buf: &mut Vec<u8>, t: Duration) -> bool {
        use shmkit::channel::broadcast::RecvTimeoutError as E;
        match self.subscriber.recv_timeout(buf, t) {
            Ok(_) => true,
            Err(E::Timeout) => false,
            Err(e) => panic!("shmkit recv: {e}"),
        }
    }
}

fn zenoh_ends(endpoint: &str, listen: bool, pub_key: &str, sub_key: &str) -> ZenohEnds {
    let mut config = zenoh::Config::default();
    let side = if listen { "listen/endpoints" } else { "connect/endpoints" };
    config.insert_json5(side, &format!("[\"{endpoint}\"]")).unwrap();
    config.insert_json5("scouting/multicast/enabled", "false").unwrap();
    let session = zenoh::open(config).wait().expect("zenoh open");
    let publisher = session
        .declare_publisher(pub_key.to_string())
        .congestion_control(CongestionControl::Block)
        .wait()
        .unwrap();
    let subscriber = session
        .declare_subscriber(sub_key.to_string())
        .with(FifoChannel::new(1024))
        .wait()
        .unwrap();
    ZenohEnds { publisher, subscriber, _session: session }
}

fn open_wait(name: &Name) -> Segment {
    let start = Instant::now();
    loop {
        match Segment::open(name, &Options::default()) {
            Ok(s) if shmkit::layout::validate(&s).is_ok() => return s,
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => panic!("{name}: {e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{name} never appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn shm_ends(out: &str, input: &str, size: usize, slots: u64, wait: WaitStrategy) -> ShmEnds {
    let config = Config {
        slots: slots as usize,
        max_message: size.max(8),
        overflow: Overflow::Backpressure,
        ..Config::default()
    };
    let mut publisher = Publisher::create(&out.parse().unwrap(), &config).expect("create");
    publisher.set_wait_strategy(wait);
    let mut subscriber = Subscriber::from_segment(open_wait(&input.parse().unwrap())).unwrap();
    subscriber.set_wait_strategy(wait);
    ShmEnds { publisher, subscriber }
}

fn peer(args: &PeerArgs, ping: bool) {
    let (pub_key, sub_key) =
        if ping { ("bench/req", "bench/rep") } else { ("bench/rep", "bench/req") };
    let mut ends: Box<dyn Ends> = match args.via.as_str() {
        "zenoh" => Box::new(zenoh_ends(&args.endpoint, ping, pub_key, sub_key)),
        _ => Box::new(shm_ends(
            args.out.as_deref().unwrap(),
            args.input.as_deref().unwrap(),
            args.size,
            args.slots,
            args.wait,
        )),
    };
    let msg = vec![0x5au8; args.size];
    let mut buf = Vec::new();
    // The handshake: until both sides' routes are up (a Zenoh sample with no known
    // subscriber, or a shmkit message before the bridge subscribed, is not delivered),
    // ping probes (first byte 1) and pong echoes; then ping says "start" (2), and pong
    // echoes that and begins.
    let mut probe = msg.clone();
    if ping {
        probe[0] = 1;
        loop {
            ends.send(&probe);
            if ends.recv_timeout(&mut buf, Duration::from_millis(100)) {
                break;
            }
        }
        probe[0] = 2;
        ends.send(&probe);
        loop {
            ends.recv(&mut buf);
            if buf[0] == 2 {
                break;
            }
        }
    } else {
        loop {
            ends.recv(&mut buf);
            ends.send(&buf.clone());
            if buf[0] == 2 {
                break;
            }
        }
    }
    match (args.mode.as_str(), ping) {
        ("latency", true) => {
            let mut rtts = Vec::with_capacity(args.count as usize);
            for i in 0..args.count + 200 {
                let t = Instant::now();
                ends.send(&msg);
                ends.recv(&mut buf);
                if i >= 200 {
                    rtts.push(t.elapsed().as_nanos() as u64);
                }
            }
            rtts.sort_unstable();
            println!("p50_ns {}", rtts[rtts.len() / 2] / 2);
        }
        ("latency", false) => {
            for _ in 0..args.count + 200 {
                ends.recv(&mut buf);
                ends.send(&buf.clone());
            }
        }
        ("throughput", true) => {
            let t = Instant::now();
            for _ in 0..args.count {
                ends.send(&msg);
            }
            ends.recv(&mut buf); // the ack after the last
            let secs = t.elapsed().as_secs_f64();
            println!("rate {}", args.count as f64 / secs);
        }
        _ => {
            for _ in 0..args.count {
                ends.recv(&mut buf);
            }
            ends.send(&msg);
        }
    }
    // Give the last answer time to leave before the session closes.
    std::thread::sleep(Duration::from_millis(200));
}

struct Reaped(Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn bin_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().to_path_buf()
}

fn endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp/127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// How the processes run: the shmkit ends' and the bridges' wait strategies (`--wait`,
/// `--bridge-wait`), and the CPUs of "host A" and "host B" (`--pin`).
#[derive(Clone, Copy)]
struct Setup {
    ends: WaitStrategy,
    bridges: WaitStrategy,
    pin: Option<[usize; 2]>,
    slots: u64,
}

impl Setup {
    /// Runs `c` on host A's CPU (`host` 0) or host B's (1), if pinned.
    fn place(&self, c: &mut Command, host: usize) {
        let Some(cpus) = self.pin else { return };
        let cpu = cpus[host];
        let pin = move || {
            // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays inside it
            // (cpu < CPU_SETSIZE, checked when parsed); sched_setaffinity only reads it.
            // Between fork and exec only this system call runs (async-signal-safe).
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: the closure makes one system call and allocates nothing.
        unsafe { std::os::unix::process::CommandExt::pre_exec(c, pin) };
    }
}

/// One measurement; returns the number ping printed.
fn measure(via: &str, size: usize, mode: &str, count: u64, setup: Setup) -> f64 {
    let me = std::env::current_exe().unwrap();
    let ep = endpoint();
    let tag = format!("/shmkit.bench.bridge.{}", std::process::id());
    let slots = setup.slots.to_string();
    let (a_req, a_rep, b_req, b_rep) = (
        format!("posix:{tag}.a.req"),
        format!("posix:{tag}.a.rep"),
        format!("posix:{tag}.b.req"),
        format!("posix:{tag}.b.rep"),
    );
    // Ping runs on host A, pong on host B.
    let common = |role: &str, out: &str, input: &str, host: usize| {
        let mut c = Command::new(&me);
        setup.place(&mut c, host);
        c.args([
            role,
            "--via",
            via,
            "--endpoint",
            &ep,
            "--size",
            &size.to_string(),
            "--mode",
            mode,
            "--count",
            &count.to_string(),
        ]);
        if via == "shm" {
            c.args(["--out", out, "--in", input, "--wait", &setup.ends.to_string()]);
            c.args(["--slots", &slots]);
        }
        c
    };
    let mut bridges = Vec::new();
    if via == "shm" {
        let bridge = bin_dir().join("shmkit-bridge");
        let size_arg = size.max(8).to_string();
        let start = |host: usize, side: &str, import: String, export: String| {
            let mut c = Command::new(&bridge);
            c.args([side, &ep, "--import", &import, "--export", &export])
                .args(["--max-msg", &size_arg, "--slots", &slots])
                .args(["--wait", &setup.bridges.to_string()])
                .stderr(Stdio::null());
            setup.place(&mut c, host);
            Reaped(c.spawn().expect("shmkit-bridge beside the bench binary"))
        };
        bridges.push(start(
            0,
            "--listen",
            format!("bench/rep={a_rep}"),
            format!("{a_req}=bench/req"),
        ));
        bridges.push(start(
            1,
            "--connect",
            format!("bench/req={b_req}"),
            format!("{b_rep}=bench/rep"),
        ));
    }
    let mut ping =
        Reaped(common("ping", &a_req, &a_rep, 0).stdout(Stdio::piped()).spawn().unwrap());
    let _pong = Reaped(common("pong", &b_rep, &b_req, 1).stdout(Stdio::null()).spawn().unwrap());
    let mut stdout = ping.0.stdout.take().unwrap();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = done.send(s);
    });
    // A measurement that hangs is reported, not waited for.
    let out = result.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| {
        eprintln!("bench: {via} {mode} {size} B did not finish in 120 s");
        String::new()
    });
    drop(ping);
    drop(bridges);
    for n in [&a_req, &a_rep, &b_req, &b_rep] {
        if let Ok(s) = Segment::open(&n.parse().unwrap(), &Options::default()) {
            let _ = s.remove();
        }
    }
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == "p50_ns" || *k == "rate")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `A,B`: two CPUs this process may run on.
fn parse_pin(s: &str) -> Result<[usize; 2], String> {
    let cpus: Vec<usize> = s
        .split(',')
        .map(|c| c.trim().parse::<usize>().map_err(|_| format!("{c:?} is not a CPU number")))
        .collect::<Result<_, _>>()?;
    let [a, b] = cpus[..] else {
        return Err(format!("{s:?}: expected two CPUs, CPU_A,CPU_B"));
    };
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the set is ours and of the size given.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) };
    for cpu in [a, b] {
        // SAFETY: CPU_ISSET reads the set, cpu bounded first.
        let ok = rc == 0
            && cpu < libc::CPU_SETSIZE as usize
            && unsafe { libc::CPU_ISSET(cpu, &allowed) };
        if !ok {
            return Err(format!("CPU {cpu} is not one this process may run on"));
        }
    }
    Ok([a, b])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args = Args::parse();
    match &args.role {
        Some(Role::Ping(p)) => return peer(p, true),
        Some(Role::Pong(p)) => return peer(p, false),
        None => {}
    }
    let setup =
        Setup { ends: args.wait, bridges: args.bridge_wait, pin: args.pin, slots: args.slots };
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let stream = args.stream.unwrap_or(if size <= 1024 { 1_000_000 } else { 20_000 });
        let (mut zl, mut bl, mut zt, mut bt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..args.rounds {
            eprintln!("bench: {size} B, round {} of {}", round + 1, args.rounds);
            let wanted = |path: &str, mode: &str| {
                args.only.iter().any(|p| p == path) && args.modes.iter().any(|m| m == mode)
            };
            let run = |into: &mut Vec<f64>, path: &str, via: &str, mode: &str, count: u64| {
                into.push(if wanted(path, mode) {
                    measure(via, size, mode, count, setup)
                } else {
                    f64::NAN
                })
            };
            run(&mut zl, "zenoh", "zenoh", "latency", args.trips);
            run(&mut bl, "bridged", "shm", "latency", args.trips);
            run(&mut zt, "zenoh", "zenoh", "throughput", stream);
            run(&mut bt, "bridged", "shm", "throughput", stream);
        }
        let row = serde_json::json!({
            "size": size,
            "pin": setup.pin,
            "zenoh_p50_ns": median(zl.clone()), "bridged_p50_ns": median(bl.clone()),
            "zenoh_msgs_per_s": median(zt.clone()), "bridged_msgs_per_s": median(bt.clone()),
            "rounds": { "zenoh_p50_ns": zl, "bridged_p50_ns": bl, "zenoh_msgs_per_s": zt, "bridged_msgs_per_s": bt },
        });
        rows.push(row);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap());
        return;
    }
    if let Some([a, b]) = setup.pin {
        println!("pinned: host A (P, bridge A) on CPU {a}, host B (Q, bridge B) on CPU {b}");
    }
    println!(
        "SIZE     ZENOH P50   BRIDGED P50  +µs      ZENOH MSG/S  BRIDGED MSG/S  BRIDGED/ZENOH"
    );
    for r in &rows {
        // A path or mode left out (`--only`, `--modes`) is null: printed as NaN.
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let (zl, bl) = (f("zenoh_p50_ns"), f("bridged_p50_ns"));
        let (zt, bt) = (f("zenoh_msgs_per_s"), f("bridged_msgs_per_s"));
        println!(
            "{:<8} {:>8.1} µs {:>9.1} µs {:>+7.1}  {:>11.0}  {:>13.0}  {:>12.2}",
            r["size"],
            zl / 1e3,
            bl / 1e3,
            (bl - zl) / 1e3,
            zt,
            bt,
            bt / zt
        );
    }
}
