//! `shmkit`: inter-process communication through shared memory, from the shell.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod article;
mod bench;
mod chan;
mod channel_view;
mod cpus;
mod create;
mod demo;
mod dump;
mod gc;
mod info;
mod inspect;
mod interference;
mod ls;
mod ping;
mod pipe;
mod progress;
mod pubsub;
mod rm;
mod signals;
mod soak;
mod stats;
mod top;
mod util;
mod where_;

use clap::{Parser, Subcommand};

/// Inter-process communication through shared memory on Linux.
#[derive(Parser, Debug)]
#[command(
    name = "shmkit",
    version,
    propagate_version = true,
    after_help = "Targets name a segment: sysv:0xKEY, sysv-id:ID, posix:/NAME, file:PATH, ftok:PATH:PROJ.\n\
                  Channels (send, recv, ping, pong) live in such segments; ping/pong use NAME.req and NAME.rep.\n\
                  Failures print `shmkit: <what>: <why>` and exit 1; usage errors exit 2."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List SysV and POSIX shared-memory segments (like lsipc -m / ipcs -m).
    Ls(ls::Args),
    /// Create a named segment (SysV, POSIX or file-backed) and leave it in place.
    Create(create::Args),
    /// Show everything about one segment, including its shmkit header.
    Info(info::Args),
    /// Remove segments (shmkit's only, unless --force).
    Rm(rm::Args),
    /// Remove shmkit segments whose creator and endpoints are all dead.
    Gc(gc::Args),
    /// Hex-dump a segment's bytes, like xxd.
    Dump(dump::DumpArgs),
    /// Write bytes into a segment at an offset.
    Write(dump::WriteArgs),
    /// Send stdin through a channel, one message per line (or --bytes N chunks).
    Send(pipe::SendArgs),
    /// Write a channel's messages to stdout until the sender closes.
    Recv(pipe::RecvArgs),
    /// Publish stdin on a broadcast channel, one message per line (or --bytes N chunks).
    Pub(pubsub::PubArgs),
    /// Write what is published on a broadcast channel to stdout.
    Sub(pubsub::SubArgs),
    /// Measure round-trip latency (or --stream throughput) against a pong process.
    Ping(ping::PingArgs),
    /// Echo messages back to a ping process.
    Pong(ping::PongArgs),
    /// Start a pong child, measure latency against the physical floor, and clean up;
    /// or `demo server|client`: the "IPC - Shared Memory" article's ping/pong.
    Demo(demo::Args),
    /// Watch every shmkit channel live: rates, fill, lag, and who is at each end.
    Top(top::Args),
    /// Show where each process maps a segment: virtual addresses and physical frames.
    Where(where_::Args),
    /// Stream N checksummed messages to a verifying process; report loss and rate.
    Soak(soak::Args),
    /// Compare every IPC mechanism (pipes, sockets, queues, signals, raw shm, shmkit)
    /// against the machine's physical floor, measured in the same run.
    Bench(bench::Args),
    #[command(name = "__bench-peer", hide = true)]
    BenchPeer(bench::harness::PeerArgs),
    #[command(name = "__soak-verify", hide = true)]
    SoakVerify(soak::ChildArgs),
    #[command(name = "__idle-peer", hide = true)]
    IdlePeer(bench::idle::PeerArgs),
}

fn main() {
    signals::install();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Ls(a) => ls::run(a),
        Command::Create(a) => create::run(a),
        Command::Info(a) => info::run(a),
        Command::Rm(a) => rm::run(a),
        Command::Gc(a) => gc::run(a),
        Command::Dump(a) => dump::run_dump(a),
        Command::Write(a) => dump::run_write(a),
        Command::Send(a) => pipe::run_send(a),
        Command::Recv(a) => pipe::run_recv(a),
        Command::Pub(a) => pubsub::run_pub(a),
        Command::Sub(a) => pubsub::run_sub(a),
        Command::Ping(a) => ping::run_ping(a),
        Command::Pong(a) => ping::run_pong(a),
        Command::Demo(a) => demo::run(a),
        Command::Top(a) => top::run(a),
        Command::Where(a) => where_::run(a),
        Command::Soak(a) => soak::run(a),
        Command::SoakVerify(a) => soak::run_child(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchPeer(a) => bench::harness::run(a),
        Command::IdlePeer(a) => bench::idle::run_peer(a),
    };
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shmkit: {e}");
            1
        }
    };
    // A signal that came while the command was ending still decides the status.
    signals::exit(code)
}
