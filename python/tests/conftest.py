"""Helpers for the Python tests: unique channel names, peer processes, the CLI."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_counter = itertools.count()


@pytest.fixture
def target() -> str:
    """A POSIX name no other test (or run) uses; removed after the test if left."""
    # `shmkit.` names are the ones gc looks at in /dev/shm.
    name = f"/shmkit.pytest.{os.getpid()}.{next(_counter)}"
    yield f"posix:{name}"
    for suffix in ("", ".req", ".rep"):
        try:
            os.unlink(f"/dev/shm{name}{suffix}")
        except FileNotFoundError:
            pass


def peer(code: str, *args: str, wrap: list[str] | None = None, **kwargs) -> subprocess.Popen:
    """Runs `code` (dedented) in a new Python process with `args` as sys.argv[1:],
    under the command `wrap` if given (e.g. `["unshare", "--net"]`)."""
    return subprocess.Popen(
        [*(wrap or []), sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def finish(p: subprocess.Popen, timeout: float = 60) -> str:
    """Waits for a peer; fails the test with its stderr if it failed."""
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"peer failed ({p.returncode}):\n{err.decode()}"
    return out.decode()


def shmkit_cli() -> str:
    """The `shmkit` binary: $SHMKIT_BIN (set by the Rust test that runs pytest), or
    the workspace's debug or release build."""
    env = os.environ.get("SHMKIT_BIN")
    if env:
        return env
    root = Path(__file__).resolve().parents[2]
    for build in ("debug", "release"):
        exe = root / "target" / build / "shmkit"
        if exe.exists():
            return str(exe)
    found = shutil.which("shmkit")
    if found:
        return found
    pytest.fail("no shmkit binary: build it (cargo build) or set SHMKIT_BIN")


def state_of(pid: int, tid: int | None = None) -> str:
    """The scheduler state letter of a process (or one of its threads)."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    with open(path) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_until_sleeping(pid: int, tid: int | None = None) -> None:
    """Returns once the process (thread) sleeps in the kernel: blocked in a wait."""
    while state_of(pid, tid) != "S":
        os.sched_yield()
