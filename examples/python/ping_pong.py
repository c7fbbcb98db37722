#!/usr/bin/env python3
"""The "IPC - Shared Memory" article's ping/pong, on shmkit.

The article's Python version puts 4 bytes in a System V segment and has each side
sleep-poll until the other has written: every round trip costs several sleeps. Here
the server answers each request the moment it arrives (a shmkit request/reply
service; waiting releases the GIL and sleeps in the kernel, no polling), and Ctrl-C
stops either side cleanly.

    python3 ping_pong.py server            # terminal 1
    python3 ping_pong.py client [ROUNDS]   # terminal 2
"""

from __future__ import annotations

import signal
import sys
import time

import shmkit

SERVICE = "posix:/shmkit.example.pingpong"


def server() -> None:
    # SIGTERM ends the server as Ctrl-C does: the service is removed on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with shmkit.Server.create(SERVICE, clients=4) as s:
        print(f"serving ping -> pong at {SERVICE} (Ctrl-C to stop)")
        try:
            s.serve(lambda request: b"pong" if request == b"ping" else b"?")
        except KeyboardInterrupt:
            print(f"\nanswered {s.answered} requests")


def client(rounds: int) -> None:
    with shmkit.Client.connect(SERVICE, timeout=10) as c:
        start = time.perf_counter()
        for _ in range(rounds):
            assert c.call(b"ping", timeout=5) == b"pong"
        took = time.perf_counter() - start
        print(f"{rounds} ping/pong round trips in {took * 1e3:.1f} ms ({took / rounds * 1e6:.1f} µs each)")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("server", "client"):
        sys.exit(__doc__)
    if sys.argv[1] == "server":
        server()
    else:
        client(int(sys.argv[2]) if len(sys.argv) > 2 else 10000)
