"""shmkit: shared-memory IPC for Linux.

Channels between processes through shared memory, at memory speed:

- ``Sender``/``Receiver``: one to one (SPSC), variable-length messages;
- ``Publisher``/``Subscriber``: one to many (broadcast);
- ``MpscSender``/``MpscReceiver``: many to one;
- ``Client``/``Server``: request/reply;
- ``Segment``: a raw shared-memory segment of any kind, as a buffer.

Targets name the shared memory: ``posix:/name``, ``sysv:KEY``, ``ftok:PATH:ID`` or
``file:PATH``. Sends take any buffer (bytes, bytearray, memoryview, numpy array) and
copy it once into the ring; ``recv()`` returns bytes, ``recv_into()`` fills your
buffer, ``recv_ref()`` lends the message in place (zero-copy). Waiting releases the
GIL and Ctrl-C interrupts it. Every waiting end has ``fileno()`` for selectors and
``recv_async``/``send_async`` for asyncio. Ends are context managers; receivers are
iterable (``for msg in rx:`` until the sender closes).
"""

from __future__ import annotations

from ._errors import (
    AlreadyExists,
    Busy,
    Closed,
    Corrupt,
    Disconnected,
    Empty,
    Error,
    Full,
    Incompatible,
    InvalidArgument,
    Lagged,
    NotFound,
    PeerDead,
    PermissionDenied,
    Timeout,
    TooLarge,
)
from ._shmkit import (
    Client,
    Loan,
    Message,
    MpscReceiver,
    MpscSender,
    Publisher,
    Receiver,
    Segment,
    Sender,
    Server,
    Subscriber,
    __version__,
    gc,
)

from . import _errors

__all__ = [
    "Sender",
    "Receiver",
    "Publisher",
    "Subscriber",
    "MpscSender",
    "MpscReceiver",
    "Client",
    "Server",
    "Segment",
    "Message",
    "Loan",
    "gc",
    "__version__",
    *_errors.__all__,
]
