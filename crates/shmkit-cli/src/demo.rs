//! `shmkit demo`: the README's main job. Creates a channel pair, starts a `pong` child
//! process, measures round-trip latency against the physical floor and streaming
//! throughput between the two processes, and removes everything.

use std::process::{Command, Stdio};

use shmkit::channel::WaitStrategy;
use shmkit::Name;

use crate::ping::{self, Pinger, Run};
use crate::util::{fail, CliResult, Context};

/// Without a subcommand: the main job (ping against a pong child, against the floor).
/// `demo server` / `demo client`: the "IPC - Shared Memory" article's demo protocol.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    role: Option<ArticleRole>,
    /// Round trips to measure.
    #[arg(long, short = 'n', default_value = "200000")]
    count: u64,
    /// How to wait: spin, block, adaptive, or adaptive:SPIN_US[:YIELDS].
    #[arg(long, default_value = "adaptive")]
    wait: WaitStrategy,
}

#[derive(clap::Subcommand, Debug)]
enum ArticleRole {
    /// The article's server: wait for ping, answer pong until the client says end.
    Server(crate::article::ArticleArgs),
    /// The article's client: send ping, read the reply, N rounds, then end.
    Client(crate::article::ArticleArgs),
}

pub fn run(args: &Args) -> CliResult {
    match &args.role {
        Some(ArticleRole::Server(a)) => {
            return crate::article::run(crate::article::Role::Server, a)
        }
        Some(ArticleRole::Client(a)) => {
            return crate::article::run(crate::article::Role::Client, a)
        }
        None => {}
    }
    let name = Name::Posix(format!("/shmkit.demo.{}", std::process::id()));
    // Removed when `tx`/`rx` drop, or on a signal before (with pong killed first);
    // registered first, so that a signal right after the creation finds them.
    let (req, rep) = ping::duplex(&name)?;
    let _created = (crate::signals::created(&req), crate::signals::created(&rep));
    let (tx, rx) = ping::create_pair(&name, &ping::demo_config(), args.wait)?;
    println!(
        "demo: created channel pair {name}.req / .rep (1 MiB rings) in pid {}",
        std::process::id()
    );
    let exe = std::env::current_exe().context("cannot find the shmkit executable")?;
    let (mut child, _pong) = crate::signals::spawn(
        Command::new(exe)
            .args(["pong", &name.to_string(), "--quiet", "--wait", &args.wait.to_string()])
            .stdin(Stdio::null()),
    )
    .context("cannot start the pong process")?;
    let child_pid = child.id();
    println!("demo: started pong as pid {child_pid}");
    // One process per CPU, as a latency-sensitive pair would be deployed; left to the
    // scheduler the two can share a CPU for a while and measure a context switch.
    if let Some((mine, pong)) = crate::cpus::pair() {
        if crate::cpus::pin(0, mine).and(crate::cpus::pin(child_pid, pong)).is_ok() {
            println!("demo: pinned this process to CPU {mine} and pong to CPU {pong}");
        }
    }
    let result = (|| -> CliResult {
        let mut p = Pinger::from_parts(tx, rx, args.wait.into())?;
        let mut ping_args = Run {
            channel: name.clone(),
            wait: args.wait.into(),
            count: args.count,
            size: 64,
            warmup: args.count / 10,
            floor: true,
            stream: false,
            batch: false,
        };
        println!(
            "demo: {} round trips of 64 B, then the floor between the same two processes:",
            args.count
        );
        ping::print_report(&ping::measure(&mut p, &ping_args)?, false)?;
        ping_args.stream = true;
        ping_args.count = 2_000_000;
        println!("demo: streaming 2,000,000 messages of 64 B one way:");
        ping::print_report(&ping::measure(&mut p, &ping_args)?, false)?;
        ping_args.size = 64 * 1024;
        ping_args.count = 20_000;
        println!("demo: streaming 20,000 messages of 64 KiB one way:");
        ping::print_report(&ping::measure(&mut p, &ping_args)?, false)?;
        // Both processes have touched the request ring: show it from both sides.
        let (req, _) = ping::duplex(&name)?;
        println!("demo: one segment, two processes:");
        crate::where_::print(&crate::where_::report(&req, &[std::process::id(), child_pid], 4)?);
        Ok(())
    })();
    // Dropping the pinger closed our ends: pong sees the disconnect and exits.
    let status = child.wait().context("waiting for pong")?;
    result?;
    if !status.success() {
        return fail(format!("pong exited with {status}"));
    }
    println!("demo: pong exited; removed {name}.req and {name}.rep");
    Ok(())
}
