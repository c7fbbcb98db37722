//! Request/reply across processes: four client processes × 10^4 calls with every reply
//! matched to its request; a killed client does not hold up the others and its record
//! is reused; clients learn that a killed server is dead.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use shmkit::channel::rpc::{CallError, Client, Config, Server};
use shmkit::Name;

const CALLS: u64 = 10_000;
const T: Duration = Duration::from_secs(30);

/// The service: the request's bytes reversed, then the request's length.
fn answer(req: &[u8], reply: &mut Vec<u8>) {
    reply.extend(req.iter().rev());
    reply.extend_from_slice(&(req.len() as u32).to_le_bytes());
}

fn request(client: u64, i: u64) -> Vec<u8> {
    let mut r = Vec::new();
    make_msg(client * 1_000_000 + i, 200, &mut r);
    r.extend_from_slice(&client.to_le_bytes());
    r.extend_from_slice(&i.to_le_bytes());
    r
}

#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    let name: Name = args[0].parse().unwrap();
    match role.as_str() {
        // Make N calls and check every reply; `die` SIGKILLs itself after 100 calls.
        "client" => {
            let id: u64 = args[1].parse().unwrap();
            let mut c = Client::connect(&name).unwrap();
            let (mut reply, mut want) = (Vec::new(), Vec::new());
            for i in 0..CALLS {
                if args.get(2).map(String::as_str) == Some("die") && i == 100 {
                    // SAFETY: kill takes no pointers.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
                let req = request(id, i);
                c.call(&req, &mut reply, T).unwrap_or_else(|e| panic!("call {i}: {e}"));
                want.clear();
                answer(&req, &mut want);
                assert_eq!(reply, want, "client {id} call {i}: wrong reply");
            }
            println!("peer:ok");
        }
        "server" => {
            let mut s = Server::create(&name, &Config::default()).unwrap();
            println!("peer:ready");
            s.serve_for(T, answer);
        }
        // A handler that replaces its reply instead of appending to it.
        "server-replacing" => {
            let mut s = Server::create(&name, &Config::default()).unwrap();
            println!("peer:ready");
            s.serve_for(T, |req, reply| {
                reply.clear();
                let mut whole = Vec::new();
                answer(req, &mut whole);
                *reply = whole;
            });
        }
        other => panic!("unknown role {other}"),
    }
}

fn client(name: &Name, id: u64, extra: &[&str]) -> Child {
    let mut args = vec![name.to_string(), id.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    peer_command("client", &args).stdout(Stdio::piped()).spawn().unwrap()
}

/// Serves until every child has exited; returns their statuses and outputs.
fn serve_until_done(
    server: &mut Server,
    children: Vec<Child>,
) -> Vec<(std::process::ExitStatus, String)> {
    let mut children: Vec<Option<Child>> = children.into_iter().map(Some).collect();
    let mut done = vec![None; children.len()];
    let start = Instant::now();
    while done.iter().any(Option::is_none) {
        assert!(start.elapsed() < Duration::from_secs(120), "clients never finished");
        server.serve_for(Duration::from_millis(50), answer);
        for (i, c) in children.iter_mut().enumerate() {
            if done[i].is_none() && c.as_mut().unwrap().try_wait().unwrap().is_some() {
                let out = c.take().unwrap().wait_with_output().unwrap();
                done[i] = Some((out.status, String::from_utf8_lossy(&out.stdout).into_owned()));
            }
        }
    }
    done.into_iter().map(Option::unwrap).collect()
}

#[test]
fn four_client_processes_each_get_their_own_reply_to_every_call() {
    let name = Name::Posix(format!("/{}", unique("rpc")));
    let mut server = Server::create(&name, &Config { clients: 4, ..Config::default() }).unwrap();
    let children = (0..4).map(|id| client(&name, id, &[])).collect();
    for (status, out) in serve_until_done(&mut server, children) {
        assert!(status.success() && out.contains("peer:ok"), "{status}: {out}");
    }
    assert_eq!(server.answered(), 4 * CALLS);
}

#[test]
fn a_killed_client_does_not_hold_up_the_others_and_its_record_is_reused() {
    let name = Name::Posix(format!("/{}", unique("rpc")));
    let mut server = Server::create(&name, &Config { clients: 3, ..Config::default() }).unwrap();
    let children = vec![client(&name, 0, &[]), client(&name, 1, &["die"]), client(&name, 2, &[])];
    let results = serve_until_done(&mut server, children);
    assert_eq!(results[1].0.signal(), Some(libc::SIGKILL));
    for i in [0, 2] {
        assert!(results[i].0.success() && results[i].1.contains("peer:ok"), "{results:?}");
    }
    // Every record is free again (two closed, one dead): three new clients fit, and the
    // dead one's channels were removed so its successor could create them.
    server.serve_for(Duration::from_millis(100), answer);
    // No client's channels outlive it: the two that left removed theirs, the server the
    // dead one's.
    for i in 1..=3 {
        let (req, rep) = shmkit::channel::rpc::channel_names(&name, i).unwrap();
        for n in [req, rep] {
            let Name::Posix(n) = n else { unreachable!() };
            assert!(!std::path::Path::new(&format!("/dev/shm{n}")).exists(), "{n} is left");
        }
    }
    let children = (10..13).map(|id| client(&name, id, &[])).collect();
    for (status, out) in serve_until_done(&mut server, children) {
        assert!(status.success() && out.contains("peer:ok"), "{status}: {out}");
    }
}

#[test]
fn clients_learn_the_server_died_and_a_missing_server_is_reported() {
    let name = Name::Posix(format!("/{}", unique("rpc")));
    let (mut server, _out) = spawn_ready("server", &[name.to_string()]);
    let mut c = Client::connect(&name).unwrap();
    let mut reply = Vec::new();
    c.call(b"ping", &mut reply, T).unwrap();
    assert_eq!(&reply[..4], b"gnip");
    server.kill().unwrap();
    server.wait().unwrap();
    let killed = Instant::now();
    let err = c.call(b"ping", &mut reply, T).unwrap_err();
    assert!(matches!(err, CallError::PeerDead { .. }), "{err}");
    assert!(killed.elapsed() < Duration::from_secs(1), "took {:?}", killed.elapsed());
    drop(c);
    // The dead server's registry is still there (it could not remove it); a client
    // connecting now is told at once.
    let mut late = Client::connect(&name).unwrap();
    assert!(matches!(late.call(b"x", &mut reply, T), Err(CallError::PeerDead { .. })));
    drop(late);
    let _ = shmkit::Segment::open(&name, &Default::default()).map(|s| s.remove());
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: makes PID namespaces with unshare(1)")]
fn clients_in_other_pid_namespaces_are_served_and_a_killed_one_is_dropped() {
    let name = Name::Posix(format!("/{}", unique("rpc-ns")));
    let mut server = Server::create(&name, &Config { clients: 2, ..Config::default() }).unwrap();
    let spawn = |id: u64, extra: &[&str]| {
        let mut args = vec![name.to_string(), id.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        // One that kills itself must not be its namespace's init (see the helper).
        let mut cmd = if extra.is_empty() {
            peer_command_in_pid_ns("client", &args)
        } else {
            peer_command_in_pid_ns_under_init("client", &args)
        };
        cmd.stdout(Stdio::piped()).spawn().unwrap()
    };
    let results = serve_until_done(&mut server, vec![spawn(0, &[]), spawn(1, &["die"])]);
    assert!(results[0].0.success() && results[0].1.contains("peer:ok"), "{results:?}");
    // The client SIGKILLed itself (pid 2 of its namespace): `unshare` reports that.
    assert!(!results[1].0.success() && !results[1].1.contains("peer:ok"), "{results:?}");
    assert_eq!(server.answered(), CALLS + 100);
    // Both records are free again: the dead one's was proven dead from here.
    server.serve_for(Duration::from_millis(100), answer);
    let results = serve_until_done(&mut server, vec![spawn(2, &[]), spawn(3, &[])]);
    for (status, out) in results {
        assert!(status.success() && out.contains("peer:ok"), "{status}: {out}");
    }
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: makes PID namespaces with unshare(1)")]
fn a_client_learns_that_a_server_in_another_pid_namespace_was_killed() {
    let name = Name::Posix(format!("/{}", unique("rpc-ns")));
    let mut server = peer_command_in_pid_ns("server", &[name.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    wait_for_line(&mut out, "peer:ready");
    let mut c = Client::connect(&name).unwrap();
    let mut reply = Vec::new();
    c.call(b"ping", &mut reply, T).unwrap();
    assert_eq!(&reply[..4], b"gnip");
    server.kill().unwrap();
    server.wait().unwrap();
    let err = c.call(b"ping", &mut reply, T).unwrap_err();
    assert!(matches!(err, CallError::PeerDead { .. }), "{err}");
    drop(c);
    let _ = shmkit::Segment::open(&name, &Default::default()).map(|s| s.remove());
}

#[test]
fn a_handler_that_replaces_its_reply_answers_every_call() {
    // The reply comes empty (the call number is added as it is sent): a handler that
    // clears or assigns it answers as one that appends.
    let name = Name::Posix(format!("/{}", unique("rpc")));
    let (mut server, _out) = spawn_ready("server-replacing", &[name.to_string()]);
    let mut c = Client::connect(&name).unwrap();
    let (mut reply, mut want) = (Vec::new(), Vec::new());
    for i in 0..1_000 {
        let req = request(7, i);
        c.call(&req, &mut reply, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        want.clear();
        answer(&req, &mut want);
        assert_eq!(reply, want, "call {i}: wrong reply");
    }
    drop(c);
    server.kill().unwrap();
    server.wait().unwrap();
    let _ = shmkit::Segment::open(&name, &Default::default()).map(|s| s.remove());
}
