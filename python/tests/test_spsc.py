"""SPSC channels from Python, across processes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading

import numpy as np
import pytest

import shmkit
from conftest import finish, peer, wait_until_sleeping


def test_bytes_bytearray_memoryview_and_numpy_arrive_byte_exact(target):
    tx = shmkit.Sender.create(target, capacity=1 << 16)
    p = peer(
        """
        import sys, shmkit
        rx = shmkit.Receiver.open(sys.argv[1], timeout=10)
        print("ready", flush=True)
        for msg in rx:
            sys.stdout.write(msg.hex() + "\\n")
        """,
        target,
    )
    assert p.stdout.readline() == b"ready\n"  # joined before the creator closes
    payloads = [b"hello", bytearray(b"\x00\xff" * 100), memoryview(b"view")[1:], b""]
    arr = np.arange(16, dtype=np.float64)
    for data in payloads:
        tx.send(data)
    tx.send(arr)
    tx.send(arr[::2])  # not contiguous: copied first
    tx.close()
    lines = finish(p).splitlines()
    expected = [bytes(d).hex() for d in payloads] + [arr.tobytes().hex(), arr[::2].tobytes().hex()]
    assert lines == expected


def test_a_hundred_thousand_checksummed_messages_each_way(target):
    """10^5 messages Python -> Python in another process, each checked, and back."""
    back = target + ".back"
    count = 100_000
    p = peer(
        """
        import hashlib, sys, shmkit
        rx = shmkit.Receiver.open(sys.argv[1], timeout=10)
        tx = shmkit.Sender.create(sys.argv[2], capacity=1 << 16)
        for i in range(int(sys.argv[3])):
            msg = rx.recv(timeout=30)
            body, digest = msg[:-8], msg[-8:]
            assert hashlib.blake2b(body, digest_size=8).digest() == digest, i
            assert int.from_bytes(body[:8], "little") == i, i
            tx.send(msg)
        """,
        target,
        back,
        str(count),
    )
    tx = shmkit.Sender.create(target, capacity=1 << 16)
    rx = shmkit.Receiver.open(back, timeout=10)
    sent = []
    for i in range(count):
        body = i.to_bytes(8, "little") + os.urandom(i % 200)
        msg = body + hashlib.blake2b(body, digest_size=8).digest()
        sent.append(msg)
        tx.send(msg)
        if i >= 64:  # keep both rings from filling: read replies as we go
            assert rx.recv(timeout=30) == sent[i - 64]
    for i in range(max(0, count - 64), count):
        assert rx.recv(timeout=30) == sent[i]
    finish(p)


def test_recv_ref_is_zero_copy_and_a_released_view_raises(target):
    tx = shmkit.Sender.create(target, capacity=4096)
    rx = shmkit.Receiver.open(target)
    tx.send(np.arange(8, dtype=np.int64))
    name = target.split(":", 1)[1]
    mappings = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith("/dev/shm" + name):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                mappings.append((lo, hi))
    assert mappings, "the channel's segment is mapped"
    with rx.recv_ref() as view:
        assert view.readonly
        arr = np.frombuffer(view, dtype=np.int64)
        assert list(arr) == list(range(8))
        address = arr.__array_interface__["data"][0]
        # The array's memory is the ring itself, inside the segment's mapping.
        assert any(lo <= address < hi for lo, hi in mappings), (hex(address), mappings)
        del arr
    with pytest.raises(ValueError):
        view[0]
    with pytest.raises(ValueError):
        bytes(view)


def test_a_view_that_outlives_its_block_holds_the_message_until_it_goes(target):
    tx = shmkit.Sender.create(target, capacity=4096)
    rx = shmkit.Receiver.open(target)
    tx.send(b"first")
    tx.send(b"second")
    with rx.recv_ref() as view:
        kept = np.frombuffer(view, dtype=np.uint8)
    # The message is still ours while the array lives: its bytes stay as they were,
    # and the receiver lends nothing else meanwhile.
    assert kept.tobytes() == b"first"
    with pytest.raises(shmkit.Error, match="still lends"):
        rx.recv(timeout=0)
    del kept
    assert rx.recv(timeout=1) == b"second"


def test_recv_into_fills_a_buffer_and_a_short_one_keeps_the_message(target):
    tx = shmkit.Sender.create(target, capacity=4096)
    rx = shmkit.Receiver.open(target)
    tx.send(b"0123456789")
    small = bytearray(4)
    with pytest.raises(shmkit.TooLarge) as info:
        rx.recv_into(small)
    assert info.value.len == 10
    buf = np.zeros(16, dtype=np.uint8)
    assert rx.recv_into(buf) == 10
    assert buf[:10].tobytes() == b"0123456789"
    with pytest.raises(TypeError):
        rx.recv_into(b"read-only bytes")


def test_loans_are_sent_on_exit_abandoned_on_exception_and_commit_a_prefix(target):
    tx = shmkit.Sender.create(target, capacity=4096)
    rx = shmkit.Receiver.open(target)
    with tx.loan(5) as buf:
        buf[:] = b"whole"
    with pytest.raises(RuntimeError):
        with tx.loan(5) as buf:
            buf[:] = b"never"
            raise RuntimeError("abandon")
    loan = tx.loan(100)
    with loan as buf:
        buf[:3] = b"pre"
        loan.commit(3)
    assert rx.recv(timeout=1) == b"whole"
    assert rx.recv(timeout=1) == b"pre"
    assert rx.try_recv() is None
    with pytest.raises(ValueError):
        buf[0] = 1
    with pytest.raises(shmkit.TooLarge):
        tx.loan(1 << 20)


def test_timeouts_try_and_closed_ends(target):
    tx = shmkit.Sender.create(target, capacity=256)
    rx = shmkit.Receiver.open(target)
    assert rx.try_recv() is None
    assert rx.try_recv_ref() is None
    with pytest.raises(shmkit.Timeout):
        rx.recv(timeout=0.05)
    sent = 0
    while tx.try_send(b"x" * 50):
        sent += 1
    assert sent > 0
    with pytest.raises(TimeoutError):
        tx.send(b"x" * 50, timeout=0.05)
    assert tx.max_message == 256 // 2 - 16
    rx.close()
    assert rx.closed
    with pytest.raises(shmkit.Closed):
        rx.recv()


def test_bad_arguments_raise_clear_exceptions(target):
    with pytest.raises(shmkit.InvalidArgument):
        shmkit.Sender.create("nonsense", capacity=4096)
    with pytest.raises(shmkit.InvalidArgument):
        shmkit.Sender.create(target, capacity=1000)  # not a power of two
    with pytest.raises(shmkit.NotFound):
        shmkit.Receiver.open(target)
    with pytest.raises((OverflowError, TypeError)):
        shmkit.Sender.create(target, capacity=-1)
    tx = shmkit.Sender.create(target, capacity=4096)
    with pytest.raises(shmkit.AlreadyExists):
        shmkit.Sender.create(target, capacity=4096)
    with pytest.raises(TypeError, match="bytes-like"):
        tx.send(12345)
    with pytest.raises(TypeError):
        tx.send("text is not bytes")
    with pytest.raises(shmkit.TooLarge):
        tx.send(b"x" * 4096)
    with pytest.raises(shmkit.InvalidArgument):
        tx.set_wait("sometimes")
    with pytest.raises((OverflowError, TypeError)):
        tx.loan(-1)
    with pytest.raises(shmkit.InvalidArgument):
        tx.send(b"x", timeout=-1)
    tx.close()
    with pytest.raises(shmkit.Closed):
        tx.send(b"x")


def test_a_killed_python_peer_is_reported_as_peer_dead(target):
    p = peer(
        """
        import sys, shmkit
        tx = shmkit.Sender.create(sys.argv[1], capacity=4096)
        tx.send(b"before")
        print("ready", flush=True)
        sys.stdin.read()
        """,
        target,
        stdin=subprocess.PIPE,
    )
    assert p.stdout.readline() == b"ready\n"
    rx = shmkit.Receiver.open(target)
    p.kill()
    p.wait()
    assert rx.recv(timeout=5) == b"before"  # what it committed is delivered
    with pytest.raises(shmkit.PeerDead) as info:
        rx.recv(timeout=5)
    assert info.value.pid == p.pid


def test_ctrl_c_interrupts_a_blocking_recv_and_leaves_the_channel_usable(target):
    p = peer(
        """
        import sys, time, shmkit
        rx = shmkit.Receiver.create(sys.argv[1], capacity=4096)
        print("ready", flush=True)
        try:
            rx.recv()
            print("received?!", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print(rx.recv(timeout=10).decode(), flush=True)
        """,
        target,
    )
    assert p.stdout.readline() == b"ready\n"
    wait_until_sleeping(p.pid)
    p.send_signal(signal.SIGINT)
    assert p.stdout.readline() == b"interrupted\n"
    tx = shmkit.Sender.open(target, timeout=5)
    tx.send(b"still works")
    assert finish(p).strip() == "still works"


def test_the_gil_is_released_while_waiting(target):
    tx = shmkit.Sender.create(target, capacity=4096)
    rx = shmkit.Receiver.open(target)
    got = []
    blocked = threading.Event()
    tid = []

    def receive():
        tid.append(threading.get_native_id())
        blocked.set()
        got.append(rx.recv(timeout=10))

    t = threading.Thread(target=receive)
    t.start()
    blocked.wait()
    # This thread runs (and sends) only if the waiting one let go of the GIL.
    wait_until_sleeping(os.getpid(), tid[0])
    tx.send(b"through")
    t.join()
    assert got == [b"through"]


def test_ends_are_context_managers_and_iterate_until_disconnected(target):
    with shmkit.Sender.create(target, capacity=4096) as tx:
        p = peer(
            """
            import sys, shmkit
            with shmkit.Receiver.open(sys.argv[1], timeout=10) as rx:
                print("ready", flush=True)
                print(sum(1 for _ in rx))
            """,
            target,
        )
        assert p.stdout.readline() == b"ready\n"
        for i in range(1000):
            tx.send(i.to_bytes(4, "little"))
    assert tx.closed
    assert finish(p).strip() == "1000"
