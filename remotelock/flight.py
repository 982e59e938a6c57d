"""One flight of :func:`~remotelock.single_flight`, free of I/O: what its callers look up,
and how a result or an exception travels through the store.

Every flight is one hold of the key's lock. Its leader (the caller that takes the lock)
runs the function and, before releasing, keeps the outcome under ``last:<key>``,
prefixed by its lease's fencing token: the flight's number, which strictly increases
per key. A caller reads that record as it arrives (the newest flight that ended
before it came), then waits for the lock as a ``skip_if`` caller does (woken by every
release); after each failed attempt and wake-up, and right after taking the lock, it
reads the record again and returns the outcome of the first flight numbered higher:
one that ended after it came, so its call overlapped that flight. Sleeping through a
whole flight (a store that polls) loses nothing. A leader that dies leaves no record:
its lease runs out, the waiters try the lock, exactly one takes it and leads the next
flight. With ``result_ttl`` a value is also kept under ``kept:<key>`` for that long,
and callers look there first.

An outcome is one byte of kind and a body: ``v`` and the serializer's bytes of the
value, or ``e`` and a JSON record of the exception (its type by module and qualified
name, its message and, with the default pickle serializer, the pickled exception), so
waiters raise the same type with the same message wherever they run.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import pickle
from collections.abc import Callable, Generator
from typing import Any, Final, Protocol

from .core import Call
from .errors import FlightFailed, ResultTooLarge

VALUE: Final = b"v"
ERROR: Final = b"e"
KEPT: Final = "kept:"
LAST: Final = "last:"
DEFAULT_MAX_SIZE: Final = 1024 * 1024
"""Largest outcome kept by default, in bytes (``max_size=``); a store may allow less."""
LAST_KEPT: Final = 60.0
"""Seconds (at least; the flight's lease length if longer, plus :data:`GRACE`) a
flight's record stays for its waiters, however long they sleep between looks."""
GRACE: Final = 5.0


class Serializer(Protocol):
    """What ``serializer=`` takes: ``pickle``, ``json`` or alike."""

    def dumps(self, obj: Any, /) -> bytes | str: ...
    def loads(self, data: bytes, /) -> Any: ...


def record(fence: int, outcome: bytes) -> bytes:
    """``last:<key>``'s value: the flight's number, a colon, its outcome."""
    return b"%d:" % fence + outcome


def parse_record(data: bytes | None) -> tuple[int, bytes | None]:
    """The flight number and outcome of a ``last:<key>`` value (``0, None`` if none)."""
    if data is None:
        return 0, None
    number, _, outcome = bytes(data).partition(b":")
    return int(number), outcome


def pack_value(value: Any, serializer: Serializer, limit: int, key: str) -> bytes:
    """``value`` as an outcome; :class:`ResultTooLarge` past ``limit`` bytes."""
    body = serializer.dumps(value)
    data = VALUE + (body.encode() if isinstance(body, str) else bytes(body))
    if len(data) > limit:
        raise ResultTooLarge(key, len(data), limit)
    return data


def pack_error(error: BaseException, serializer: Serializer) -> bytes:
    """``error`` as an outcome (see the module docs)."""
    kind = type(error)
    record: dict[str, Any] = {
        "type": f"{kind.__module__}:{kind.__qualname__}",
        "message": str(error),
    }
    if serializer is pickle:  # unpicklable: the type and message still go
        with contextlib.suppress(Exception):
            record["pickled"] = base64.b64encode(pickle.dumps(error)).decode()
    return ERROR + json.dumps(record).encode()


def unpack(data: bytes, serializer: Serializer) -> Any:
    """The value an outcome carries; or raise the exception it carries."""
    kind, body = data[:1], data[1:]
    if kind == VALUE:
        return serializer.loads(body)
    record = json.loads(body)
    if "pickled" in record and serializer is pickle:
        error = pickle.loads(base64.b64decode(record["pickled"]))  # pickle: the caller's choice
        if isinstance(error, BaseException):
            raise error
    raise rebuilt(str(record["type"]), str(record["message"]))


def rebuilt(name: str, message: str) -> BaseException:
    """An exception of the type named ``module:qualname`` with ``message``, or
    :class:`FlightFailed` naming it if that type cannot be made here."""
    module, _, qualname = name.partition(":")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found(message)
    except Exception:  # not importable, or not made from a message: named instead
        pass
    return FlightFailed(name, message)


class Flight:
    """One caller's view of the flights of a key (shared by its skip checks)."""

    __slots__ = ("found", "kept", "key", "read", "since")

    def __init__(self, key: str, read: Callable[[str], Any], kept: bool) -> None:
        self.key = key
        self.read = read  # the store's get_result (sync or async)
        self.kept = kept  # look under kept:<key> first (result_ttl > 0)
        self.since: int | None = None  # the newest flight that ended before the call
        self.found: bytes | None = None

    def check(self) -> Generator[Call, Any, bool]:
        """The ``skip_if`` of a caller: ``True`` once an outcome it may use is found
        (kept in :attr:`found`); see the module docs."""
        if self.kept:
            data = yield Call(self.read, (KEPT + self.key,))
            if data is not None:
                self.found = bytes(data)
                return True
        number, outcome = parse_record((yield Call(self.read, (LAST + self.key,))))
        if self.since is None:
            self.since = number  # the first look: what was there before the call
            return False
        if outcome is not None and number > self.since:
            self.found = outcome
            return True
        return False


__all__ = [
    "DEFAULT_MAX_SIZE",
    "GRACE",
    "KEPT",
    "LAST",
    "LAST_KEPT",
    "Flight",
    "Serializer",
    "pack_error",
    "pack_value",
    "parse_record",
    "rebuilt",
    "record",
    "unpack",
]
