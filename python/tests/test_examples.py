"""The examples in examples/python run as documented (small sizes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"


def run(*args: str, timeout: float = 120) -> str:
    r = subprocess.run([sys.executable, *args], capture_output=True, timeout=timeout, cwd=EXAMPLES)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_numpy_pipeline():
    out = run("numpy_pipeline.py", "20")
    assert "consumer: 20 arrays, checksum 20" in out


def test_ping_pong_server_and_client():
    server = subprocess.Popen(
        [sys.executable, "ping_pong.py", "server"], cwd=EXAMPLES, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert server.stdout.readline().startswith(b"serving")
    assert "500 ping/pong round trips" in run("ping_pong.py", "client", "500")
    server.send_signal(signal.SIGTERM)
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err.decode()
    assert b"answered 500 requests" in out


def test_bench_reports_every_mechanism(tmp_path):
    report = tmp_path / "bench.json"
    run("bench.py", "--seconds", "0.02", "--json", str(report))
    rows = json.loads(report.read_text())["rows"]
    names = [r["mechanism"] for r in rows]
    assert names[:3] == ["shmkit-spin", "shmkit-adaptive", "shmkit-block"]
    assert "mp.Pipe" in names and "sleep-poll (article)" in names
    for r in rows:
        assert r["p50_one_way_ns"] > 0 and r["stream_bytes_per_sec"] > 0, r
