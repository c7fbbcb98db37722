"""asyncio on shmkit's readiness fds: each end's fileno() becomes readable when it may
make progress; these coroutines try, and otherwise wait for the fd on the running
loop (loop.add_reader), so a waiting end never blocks the loop."""

from __future__ import annotations

import asyncio
from typing import Any, Callable


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def recv(end: Any) -> bytes:
    """The next message of a receiving end, waiting on the running loop."""
    fd = end.fileno()
    while True:
        msg = end.try_recv()  # None arms the fd: a message after it makes it readable
        if msg is not None:
            return msg
        await _readable(fd)


async def send(end: Any, data: Any) -> None:
    """Sends on a sending end, waiting for room on the running loop."""
    fd = end.fileno()
    while not end.try_send(data):  # False arms the fd
        await _readable(fd)


async def serve(server: Any, handler: Callable[[bytes], Any]) -> None:
    """Answers an rpc server's requests on the running loop until cancelled."""
    fd = server.fileno()
    while True:
        while server.poll(handler):  # 0 arms the fd
            pass
        await _readable(fd)


async def call(client: Any, request: Any) -> bytes:
    """An rpc call whose wait for the reply runs on the running loop."""
    fd = client.fileno()
    client.start_call(request)
    while True:
        reply = client.try_reply()  # None arms the fd
        if reply is not None:
            return reply
        await _readable(fd)
