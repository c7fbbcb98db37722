"""Readiness fds: selectors and asyncio over shmkit ends, across processes."""

from __future__ import annotations

import asyncio
import os
import selectors
import shutil

import pytest

import shmkit
from conftest import finish, peer


def test_fileno_works_with_selectors(target):
    rx = shmkit.Receiver.create(target, capacity=4096)
    sel = selectors.DefaultSelector()
    sel.register(rx.fileno(), selectors.EVENT_READ)
    assert rx.try_recv() is None  # arms the fd
    assert sel.select(timeout=0) == []
    p = peer(
        """
        import sys, shmkit
        tx = shmkit.Sender.open(sys.argv[1], timeout=10)
        for i in range(100):
            tx.send(b"%d" % i)
        """,
        target,
    )
    got = []
    while len(got) < 100:
        assert sel.select(timeout=10), "the fd became readable"
        while len(got) < 100 and (msg := rx.try_recv()) is not None:
            got.append(int(msg))
    assert got == list(range(100))
    finish(p)


def test_asyncio_receives_and_sends_without_blocking_the_loop(target):
    back = target + ".back"

    async def echo():
        tx = shmkit.Sender.create(target, capacity=1024)
        p = peer(
            """
            import sys, shmkit
            rx = shmkit.Receiver.open(sys.argv[1], timeout=10)
            tx = shmkit.Sender.create(sys.argv[2], capacity=1024)
            print("ready", flush=True)
            for msg in rx:
                tx.send(msg)
            """,
            target,
            back,
        )
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, p.stdout.readline)
        assert line == b"ready\n"
        rx = shmkit.Receiver.open(back, timeout=10)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        # 2000 messages of 100 bytes through 1 KiB rings: both sides wait for room
        # and for messages many times; the loop keeps running meanwhile.
        async def produce():
            for i in range(2000):
                await tx.send_async(b"%099d" % i)

        producer = asyncio.create_task(produce())
        for i in range(2000):
            assert await rx.recv_async() == b"%099d" % i
        await producer
        tx.close()
        t.cancel()
        assert ticks > 0
        return p

    p = asyncio.run(echo())
    finish(p)


def test_an_rpc_server_serves_on_asyncio(target):
    async def main():
        server = shmkit.Server.create(target, clients=2)
        task = asyncio.create_task(server.serve_async(lambda req: req.upper()))
        p = peer(
            """
            import sys, shmkit
            c = shmkit.Client.connect(sys.argv[1], timeout=10)
            print(all(c.call(b"abc%d" % i, timeout=10) == b"ABC%d" % i for i in range(500)))
            """,
            target,
        )
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(None, finish, p)
        task.cancel()
        return out

    assert asyncio.run(main()).strip() == "True"


def test_an_rpc_client_calls_on_asyncio(target):
    p = peer(
        """
        import sys, shmkit
        s = shmkit.Server.create(sys.argv[1], clients=2)
        print("ready", flush=True)
        s.serve(lambda req: req[::-1], timeout=5)
        """,
        target,
    )
    assert p.stdout.readline() == b"ready\n"

    async def main():
        c = shmkit.Client.connect(target, timeout=10)
        replies = [await c.call_async(b"abc%d" % i) for i in range(300)]
        c.close()
        return replies

    replies = asyncio.run(main())
    assert replies == [(b"abc%d" % i)[::-1] for i in range(300)]
    finish(p)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1): the peer runs in a network namespace of its own",
)
def test_asyncio_ends_are_woken_by_a_peer_in_another_network_namespace(target):
    # A container's network namespace: a doorbell in the abstract socket namespace
    # would not reach across it (the waits hung); path-bound ones in /dev/shm do.
    back = target + ".back"

    async def main():
        tx = shmkit.Sender.create(target, capacity=1024)
        p = peer(
            """
            import sys, time, shmkit
            rx = shmkit.Receiver.open(sys.argv[1], timeout=10)
            tx = shmkit.Sender.create(sys.argv[2], capacity=1024)
            print("ready", flush=True)
            for msg in rx:
                # Longer than the waiting side's spin: it parks on its fd every time,
                # and only the doorbell's ring wakes it.
                time.sleep(0.001)
                tx.send(msg)
            """,
            target,
            back,
            wrap=["unshare", "--net"],
        )
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, p.stdout.readline)
        assert line == b"ready\n"
        rx = shmkit.Receiver.open(back, timeout=10)
        # One message at a time: each side parks on its readiness fd for every reply.
        for i in range(200):
            await tx.send_async(b"%d" % i)
            assert await asyncio.wait_for(rx.recv_async(), 10) == b"%d" % i
        tx.close()
        return p

    finish(asyncio.run(main()))
