"""Python and the Rust `shmkit` CLI on the same channels, byte for byte."""

from __future__ import annotations

import subprocess

import shmkit
from conftest import shmkit_cli


def test_python_sender_to_shmkit_recv(target):
    tx = shmkit.Sender.create(target, capacity=1 << 16)
    messages = [bytes(range(256)) * 3, b"", b"line\n", "ünïcødé".encode()] + [b"%d\n" % i for i in range(1000)]
    recv = subprocess.Popen(
        [shmkit_cli(), "recv", target, "--count", str(len(messages))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for m in messages:
        tx.send(m)
    out, err = recv.communicate(timeout=60)
    assert recv.returncode == 0, err.decode()
    assert out == b"".join(messages)


def test_shmkit_send_to_python_receiver(target, tmp_path):
    rx = shmkit.Receiver.create(target, capacity=1 << 16)
    lines = [b"%d %s\n" % (i, b"x" * (i % 300)) for i in range(5000)]
    source = tmp_path / "lines"
    source.write_bytes(b"".join(lines))
    send = subprocess.Popen([shmkit_cli(), "send", target, "--file", str(source)], stderr=subprocess.PIPE)
    got = list(rx)  # one message per line, each with its newline, until it closed
    assert send.wait(timeout=60) == 0, send.stderr.read().decode()
    assert got == lines


def test_shmkit_send_joins_a_python_mpsc_receiver(target):
    rx = shmkit.MpscReceiver.create(target, senders=4, capacity=1 << 14)
    procs = [
        subprocess.Popen([shmkit_cli(), "send", target], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for k, p in enumerate(procs):
        p.stdin.write(b"".join(b"%d:%d\n" % (k, i) for i in range(1000)))
        p.stdin.close()
    seen = {0: [], 1: []}
    for msg in rx:
        k, i = msg.rstrip(b"\n").split(b":")
        seen[int(k)].append(int(i))
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read().decode()
    assert seen == {0: list(range(1000)), 1: list(range(1000))}
