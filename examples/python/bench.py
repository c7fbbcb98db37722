#!/usr/bin/env python3
"""Python IPC side by side, in one run, between the same two pinned processes.

For each mechanism a second process (started fresh, pinned to the second CPU) echoes
64-byte messages (one-way latency = round trip / 2, median over the run), then takes
a stream of 1 MiB numpy arrays, looking at each as a numpy array (first and last
element). The throughput floor is memcpy of 1 MiB in one process, measured in the
same run. Mechanisms:

  shmkit-spin, shmkit-adaptive, shmkit-block   two shmkit SPSC channels; the receiver
                                               reads in place (recv_ref + numpy view)
  mp.Pipe                                      multiprocessing.Pipe, send_bytes/recv_bytes
  mp.Queue                                     multiprocessing.Queue (pickles arrays)
  shm+Pipe doorbell                            multiprocessing.shared_memory for the
                                               bytes, a Pipe to say "your turn"
  sleep-poll (article)                         shared_memory and a flag polled with
                                               2 µs sleeps, as the article's demo does

    python3 bench.py [--seconds S] [--cpus A,B] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import struct
import sys
import time
from multiprocessing import shared_memory

import numpy as np

import shmkit

SMALL = 64
LARGE = 1 << 20
MECHANISMS = [
    "shmkit-spin",
    "shmkit-adaptive",
    "shmkit-block",
    "mp.Pipe",
    "mp.Queue",
    "shm+Pipe doorbell",
    "sleep-poll (article)",
]


def pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def look(buf):
    """What the receiver does with a message: a numpy view, first and last element."""
    a = np.frombuffer(buf, dtype=np.uint8)
    return int(a[0]) + int(a[-1])


class ShmkitLink:
    def __init__(self, tag, side, wait):
        a, b = f"posix:/shmkit.pybench.{tag}.a", f"posix:/shmkit.pybench.{tag}.b"
        cap = 8 * LARGE
        if side == 0:
            self.tx = shmkit.Sender.create(a, capacity=cap, wait=wait)
            self.rx = shmkit.Receiver.create(b, capacity=cap, wait=wait)
        else:
            self.rx = shmkit.Receiver.open(a, timeout=10, wait=wait)
            self.tx = shmkit.Sender.open(b, timeout=10, wait=wait)
        # Each mechanism at its leanest: the methods themselves, no wrapper.
        self.send = self.tx.send
        self.recv = self.rx.recv

    def take(self, consume):
        with self.rx.recv_ref() as view:  # in place: no copy on the way in
            return consume(view)


class PipeLink:
    def __init__(self, conn):
        self.send = conn.send_bytes
        self.recv = conn.recv_bytes

    def take(self, consume):
        return consume(self.recv())


class QueueLink:
    def __init__(self, out_q, in_q):
        self.send = out_q.put
        self.recv = in_q.get

    def take(self, consume):
        return consume(self.recv())


class ShmDoorbellLink:
    """One shared buffer per direction; a Pipe message says how long the data is."""

    def __init__(self, conn, mine, theirs):
        self.conn = conn
        self.out = shared_memory.SharedMemory(name=mine)
        self.inp = shared_memory.SharedMemory(name=theirs)

    def send(self, data):
        n = memoryview(data).nbytes
        self.out.buf[:n] = memoryview(data).cast("B")
        self.conn.send_bytes(struct.pack("I", n))

    def take(self, consume):
        (n,) = struct.unpack("I", self.conn.recv_bytes())
        return consume(self.inp.buf[:n])

    def recv(self):
        return self.take(bytes)


class SleepPollLink:
    """The article's method: a flag word in shared memory, polled with short sleeps."""

    def __init__(self, mine, theirs):
        self.out = shared_memory.SharedMemory(name=mine)
        self.inp = shared_memory.SharedMemory(name=theirs)

    def send(self, data):
        while self.out.buf[0] != 0:  # the reader has not taken the last one yet
            time.sleep(2e-6)
        n = memoryview(data).nbytes
        self.out.buf[8 : 8 + n] = memoryview(data).cast("B")
        self.out.buf[1:5] = struct.pack("I", n)
        self.out.buf[0] = 1

    def take(self, consume):
        while self.inp.buf[0] == 0:
            time.sleep(2e-6)
        (n,) = struct.unpack("I", self.inp.buf[1:5])
        result = consume(self.inp.buf[8 : 8 + n])
        self.inp.buf[0] = 0
        return result

    def recv(self):
        return self.take(bytes)


def make_link(mech, side, res):
    if mech.startswith("shmkit-"):
        return ShmkitLink(res["tag"], side, mech.split("-", 1)[1])
    if mech == "mp.Pipe":
        return PipeLink(res["conns"][side])
    if mech == "mp.Queue":
        q = res["queues"]
        return QueueLink(q[side], q[1 - side])
    names = res["shm"]
    if mech == "shm+Pipe doorbell":
        return ShmDoorbellLink(res["conns"][side], names[side], names[1 - side])
    return SleepPollLink(names[side], names[1 - side])


def peer(mech, res, cpu, rounds, streamed, ready):
    """The second process: echo, then take the stream and acknowledge it."""
    pin(cpu)
    link = make_link(mech, 1, res)
    ready.set()
    for _ in range(rounds):
        link.send(link.recv())
    for _ in range(streamed):
        link.take(look)
    link.send(b"done")


def measure(mech, cpus, seconds):
    ctx = mp.get_context("spawn")
    res = {"tag": f"{os.getpid()}.{MECHANISMS.index(mech)}"}
    segments = []
    if mech in ("mp.Pipe", "shm+Pipe doorbell"):
        res["conns"] = ctx.Pipe()
    if mech == "mp.Queue":
        res["queues"] = (ctx.Queue(), ctx.Queue())
    if mech in ("shm+Pipe doorbell", "sleep-poll (article)"):
        segments = [shared_memory.SharedMemory(create=True, size=LARGE + 64) for _ in range(2)]
        for s in segments:
            s.buf[0] = 0
        res["shm"] = [s.name for s in segments]
    pin(cpus[0])
    small = np.arange(SMALL, dtype=np.uint8).tobytes()
    large = np.full(LARGE, 7, dtype=np.uint8)
    # How many fit the time: a quick probe of the round trip first.
    link = make_link(mech, 0, res) if mech.startswith("shmkit-") else None
    ready = ctx.Event()
    # Round trips and stream sizes are fixed up front (the peer must know them).
    rounds = {"sleep-poll (article)": 2000, "mp.Queue": 5000}.get(mech, 20000)
    streamed = {"sleep-poll (article)": 200, "mp.Queue": 300}.get(mech, 1000)
    rounds = max(200, int(rounds * seconds))
    streamed = max(50, int(streamed * seconds))
    proc = ctx.Process(target=peer, args=(mech, res, cpus[1], rounds, streamed, ready))
    proc.start()
    if link is None:
        link = make_link(mech, 0, res)
    ready.wait()
    rtts = []
    send, recv, clock, record = link.send, link.recv, time.perf_counter_ns, rtts.append
    for _ in range(rounds):
        t0 = clock()
        send(small)
        recv()
        record(clock() - t0)
    t0 = time.perf_counter()
    for _ in range(streamed):
        link.send(large)
    assert link.recv() == b"done"
    took = time.perf_counter() - t0
    proc.join()
    for s in segments:
        s.close()
        s.unlink()
    if mech.startswith("shmkit-"):
        for end in (link.tx, link.rx):
            end.close()
    rtts.sort()
    warm = rtts[len(rtts) // 10 :] or rtts  # the first tenth warms caches
    warm.sort()
    return {
        "mechanism": mech,
        "p50_one_way_ns": warm[len(warm) // 2] / 2,
        "p99_one_way_ns": warm[int(len(warm) * 0.99)] / 2,
        "round_trips": rounds,
        "stream_bytes_per_sec": streamed * LARGE / took,
        "streamed": streamed,
    }


def memcpy_rate(cpu, seconds):
    pin(cpu)
    src = np.full(LARGE, 7, dtype=np.uint8)
    dst = np.empty_like(src)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2 or n < 100:
        np.copyto(dst, src)
        n += 1
    return n * LARGE / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="scale of each row (default 1)")
    ap.add_argument("--cpus", default=None, help="A,B: pin this process to A, the peer to B")
    ap.add_argument("--json", default=None, help="write the figures as JSON to FILE")
    ap.add_argument("--only", default=None, help="comma-separated mechanisms to run")
    args = ap.parse_args()
    allowed = sorted(os.sched_getaffinity(0))
    if args.cpus:
        cpus = tuple(int(c) for c in args.cpus.split(","))
    else:
        cpus = (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)
    mechs = args.only.split(",") if args.only else MECHANISMS
    floor = memcpy_rate(cpus[0], args.seconds)
    rows = []
    for mech in mechs:
        print(f"  {mech} ...", file=sys.stderr, flush=True)
        rows.append(measure(mech, cpus, args.seconds))
    floor_after = memcpy_rate(cpus[0], args.seconds)
    memcpy = max(floor, floor_after)
    spin = next((r for r in rows if r["mechanism"] == "shmkit-spin"), None)
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}, shmkit {shmkit.__version__}; "
          f"pinned to CPUs {cpus[0]} and {cpus[1]}; memcpy 1 MiB: {memcpy / 1e9:.1f} GB/s")
    print(f"{'MECHANISM':22} {'64 B P50':>10} {'P99':>10} {'x SPIN':>8} {'1 MiB GB/s':>11} {'x MEMCPY':>9}")
    for r in rows:
        x = r["p50_one_way_ns"] / spin["p50_one_way_ns"] if spin else float("nan")
        print(f"{r['mechanism']:22} {r['p50_one_way_ns'] / 1e3:>8.2f}µs {r['p99_one_way_ns'] / 1e3:>8.2f}µs "
              f"{x:>8.1f} {r['stream_bytes_per_sec'] / 1e9:>11.2f} {r['stream_bytes_per_sec'] / memcpy:>9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpus": cpus, "memcpy_bytes_per_sec": memcpy, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
