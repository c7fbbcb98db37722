"""Broadcast, MPSC, request/reply and raw segments from Python, across processes."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

import shmkit
from conftest import finish, peer


def test_broadcast_under_backpressure_delivers_everything_to_two_processes(target):
    pub = shmkit.Publisher.create(target, slots=16, max_message=64, subscribers=4, overflow="backpressure")
    code = """
        import sys, shmkit
        sub = shmkit.Subscriber.open(sys.argv[1], timeout=10)
        print("ready", flush=True)
        got = [int(m) for m in sub]
        print(got == list(range(5000)), len(got))
        """
    subs = [peer(code, target) for _ in range(2)]
    for p in subs:
        assert p.stdout.readline() == b"ready\n"
    assert pub.subscribers == 2
    for i in range(5000):
        pub.send(str(i).encode())
    assert pub.published == 5000
    pub.close()
    for p in subs:
        assert finish(p).split() == ["True", "5000"]


def test_a_subscriber_that_falls_a_ring_behind_gets_lagged_with_the_count(target):
    pub = shmkit.Publisher.create(target, slots=4, max_message=16)
    sub = shmkit.Subscriber.open(target)
    for i in range(10):
        pub.send(bytes([i]))
    assert sub.lag == 10
    with pytest.raises(shmkit.Lagged) as info:
        sub.recv(timeout=1)
    assert info.value.missed == 6
    assert [sub.recv(timeout=1)[0] for _ in range(4)] == [6, 7, 8, 9]
    assert sub.try_recv() is None


def test_mpsc_senders_in_four_processes_each_arrive_in_order(target):
    rx = shmkit.MpscReceiver.create(target, senders=8, capacity=1 << 14)
    code = """
        import sys, shmkit
        tx = shmkit.MpscSender.open(sys.argv[1], timeout=10)
        me = int(sys.argv[2])
        for i in range(20000):
            if i % 7 == 0:
                with tx.loan(8) as buf:
                    buf[:] = me.to_bytes(4, "little") + i.to_bytes(4, "little")
            else:
                tx.send(me.to_bytes(4, "little") + i.to_bytes(4, "little"))
        """
    senders = [peer(code, target, str(k)) for k in range(4)]
    nxt = [0] * 4
    for _ in range(4 * 20000):
        with rx.recv_ref(timeout=30) as view:
            me = int.from_bytes(view[:4], "little")
            i = int.from_bytes(view[4:8], "little")
        assert i == nxt[me], f"sender {me}: {i} after {nxt[me] - 1}"
        nxt[me] += 1
    assert nxt == [20000] * 4
    for p in senders:
        finish(p)
    with pytest.raises(shmkit.Disconnected):  # every sender that joined has gone
        rx.try_recv()


def test_mpsc_message_says_which_sender_record_sent_it(target):
    rx = shmkit.MpscReceiver.create(target, senders=4, capacity=4096)
    a = shmkit.MpscSender.open(target)
    b = shmkit.MpscSender.open(target)
    assert {a.index, b.index} == {1, 2}
    assert rx.senders == 2
    a.send(b"from a")
    b.send(b"from b")
    seen = {}
    for _ in range(2):
        m = rx.recv_ref(timeout=1)
        seen[m.sender] = m.tobytes()
        m.release()
    assert seen == {a.index: b"from a", b.index: b"from b"}


def test_rpc_calls_from_a_python_client_process_are_answered_by_a_handler(target):
    server = shmkit.Server.create(target, clients=4)
    p = peer(
        """
        import sys, shmkit
        with shmkit.Client.connect(sys.argv[1], timeout=10) as c:
            for i in range(2000):
                assert c.call(b"%d" % i, timeout=10) == b"%d" % (2 * i), i
            print("done", flush=True)
        """,
        target,
    )
    answered = server.serve(lambda req: b"%d" % (2 * int(req)), timeout=2)
    assert answered == 2000
    assert finish(p).strip() == "done"


def test_an_rpc_handler_that_raises_stops_serving_and_raises(target):
    server = shmkit.Server.create(target, clients=2)
    client = shmkit.Client.connect(target)
    client_done = []

    def fail(req):
        raise ValueError("handler failed on " + req.decode())

    import threading

    t = threading.Thread(target=lambda: client_done.append(client.call(b"boom", timeout=10)))
    t.start()
    with pytest.raises(ValueError, match="boom"):
        server.serve(fail, timeout=10)
    t.join()
    assert client_done == [b""]  # the failed request got an empty reply


def test_an_rpc_call_to_a_killed_server_raises_peer_dead(target):
    p = peer(
        """
        import sys, shmkit
        s = shmkit.Server.create(sys.argv[1])
        print("ready", flush=True)
        s.serve(lambda r: r, timeout=None)
        """,
        target,
    )
    assert p.stdout.readline() == b"ready\n"
    c = shmkit.Client.connect(target)
    assert c.call(b"ping", timeout=10) == b"ping"
    p.kill()
    p.wait()
    with pytest.raises((shmkit.PeerDead, shmkit.Disconnected)):
        c.call(b"ping", timeout=10)


def test_a_segment_is_shared_between_processes_as_a_buffer(target):
    seg = shmkit.Segment.create(target, 4096)
    assert seg.size == 4096 and seg.kind == "posix" and seg.target == target
    arr = np.frombuffer(seg, dtype=np.uint32)
    arr[:4] = [1, 2, 3, 4]
    p = peer(
        """
        import sys, numpy, shmkit
        seg = shmkit.Segment.open(sys.argv[1])
        a = numpy.frombuffer(seg, dtype=numpy.uint32)
        print(a[:4].tolist())
        a[4] = 99
        """,
        target,
    )
    assert finish(p).strip() == "[1, 2, 3, 4]"
    assert arr[4] == 99
    with pytest.raises(BufferError):
        seg.close()  # arr still views it
    del arr
    seg.close()
    assert seg.closed
    with pytest.raises(ValueError):
        memoryview(seg)
    assert not os.path.exists("/dev/shm" + target.split(":", 1)[1])  # the creator removed it


def test_read_only_segments_refuse_writable_views(target):
    seg = shmkit.Segment.create(target, 4096)
    ro = shmkit.Segment.open(target, read_only=True)
    assert memoryview(ro).readonly
    with pytest.raises(ValueError, match="read-only"):
        np.frombuffer(ro, dtype=np.uint8)[0] = 1
    ro.close()
    seg.close()


def test_gc_removes_the_segments_of_dead_processes(target):
    p = peer(
        """
        import sys, shmkit
        tx = shmkit.Sender.create(sys.argv[1], capacity=4096)
        print("ready", flush=True)
        sys.stdin.read()
        """,
        target,
        stdin=subprocess.PIPE,
    )
    assert p.stdout.readline() == b"ready\n"
    p.kill()
    p.wait()
    name = target.split(":", 1)[1]
    assert os.path.exists("/dev/shm" + name)
    dry = [v for v in shmkit.gc(dry_run=True) if name in v["target"]]
    assert dry and dry[0]["garbage"] and not dry[0]["removed"]
    done = [v for v in shmkit.gc() if name in v["target"]]
    assert done and done[0]["removed"], done
    assert not os.path.exists("/dev/shm" + name)
