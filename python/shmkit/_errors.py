"""The exceptions shmkit raises. Every one is a `shmkit.Error`; some are also the
built-in exception a Python programmer would catch (`Timeout` is a `TimeoutError`,
`NotFound` a `FileNotFoundError`, ...)."""

from __future__ import annotations


class Error(Exception):
    """Base of every shmkit error."""

    def __init__(self, message: str = "", **attrs: int) -> None:
        super().__init__(message)
        for name, value in attrs.items():
            setattr(self, name, value)


class Closed(Error, ValueError):
    """The end (or segment) was closed by this process."""


class Disconnected(Error):
    """The other side closed its end, and everything it sent has been received."""


class PeerDead(Error):
    """The other side's process died (`.pid`); everything it committed was received."""

    pid: int


class Timeout(Error, TimeoutError):
    """Nothing happened within the timeout."""


class Full(Error):
    """No room now (non-waiting sends)."""


class Empty(Error):
    """No message now (non-waiting receives)."""


class TooLarge(Error, ValueError):
    """A message longer than allowed: `.len` (0 if unknown) and `.max` bytes."""

    len: int
    max: int


class Corrupt(Error):
    """The segment holds values no correct peer writes."""


class Incompatible(Error):
    """The segment is of another kind, shape or layout version."""


class Lagged(Error):
    """A broadcast subscriber fell a ring behind: `.missed` messages were overwritten.
    The next receive returns the oldest message still there."""

    missed: int


class NotFound(Error, FileNotFoundError):
    """No such segment or channel."""


class AlreadyExists(Error, FileExistsError):
    """The segment or channel exists already."""


class PermissionDenied(Error, PermissionError):
    """The segment's mode does not allow it."""


class Busy(Error):
    """Every place for this kind of end is held by a live process."""


class InvalidArgument(Error, ValueError):
    """A bad argument (size, name, mode, ...)."""


__all__ = [
    "Error",
    "Closed",
    "Disconnected",
    "PeerDead",
    "Timeout",
    "Full",
    "Empty",
    "TooLarge",
    "Corrupt",
    "Incompatible",
    "Lagged",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "Busy",
    "InvalidArgument",
]
