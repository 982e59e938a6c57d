"""Every exception remotelock raises, under one base class.

Each error also subclasses the closest builtin (``TimeoutError``, ``ConnectionError``,
``ValueError``), so generic handlers keep working. Errors carry their facts as
attributes and pickle with them, so they survive a trip through a process pool.
"""

from __future__ import annotations

from typing import Any


class RemoteLockError(Exception):
    """Base class: ``except RemoteLockError`` catches everything remotelock raises."""


class LockTimeout(RemoteLockError, TimeoutError):
    """The wait for a lock stopped (its ``stop`` strategy fired) before the lock was free.

    :param key: the lock key that could not be taken.
    :param attempts: how many acquire attempts were made.
    :param waited: seconds spent waiting, measured on a monotonic clock.
    """

    def __init__(self, key: str, attempts: int, waited: float, message: str | None = None) -> None:
        self.key = key
        self.attempts = attempts
        self.waited = waited
        self.message = message
        super().__init__(key, attempts, waited)

    def __str__(self) -> str:
        if self.message is not None:
            return self.message
        plural = "" if self.attempts == 1 else "s"
        return (
            f"could not acquire lock {self.key!r}: still held by another owner after "
            f"{self.attempts} attempt{plural} in {self.waited:.3f} s"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.attempts, self.waited, self.message))


class LockLost(RemoteLockError):
    """A held lock's lease ran out or was taken over before the holder let go.

    Raised when a ``with`` block (or a decorated call) ends after the lease was found
    lost, because the protected code may not have run alone. ``fencing_token`` is the
    token the holder had; a successor always has a larger one.
    """

    def __init__(self, key: str, fencing_token: int | None, reason: str = "") -> None:
        self.key = key
        self.fencing_token = fencing_token
        self.reason = reason
        super().__init__(key, fencing_token, reason)

    def __str__(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return (
            f"lock {self.key!r} (fencing token {self.fencing_token}) was lost while held{why}; "
            "the protected code may not have run exclusively"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.fencing_token, self.reason))


class LimitConflict(RemoteLockError, ValueError):
    """Two callers asked for different limits on the same key while permits were held.

    The limit of a key is set by whoever takes its first permit and holds while any
    permit of it is held; a caller asking for another limit meanwhile gets this error
    instead of silently mixing the two.
    """

    def __init__(self, key: str, held_limit: int, asked_limit: int) -> None:
        self.key = key
        self.held_limit = held_limit
        self.asked_limit = asked_limit
        super().__init__(key, held_limit, asked_limit)

    def __str__(self) -> str:
        return (
            f"key {self.key!r} is held with limit={self.held_limit}, but this caller asked "
            f"for limit={self.asked_limit}; every caller of one key must use the same limit"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.held_limit, self.asked_limit))


class ResultTooLarge(RemoteLockError, ValueError):
    """A ``single_flight`` result is larger than it may be kept (``max_size``, or the
    store's own limit): raised by the caller that ran the function, and by its waiters."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(key, size, limit)
        self.key, self.size, self.limit = key, size, limit

    def __str__(self) -> str:
        return (
            f"single_flight {self.key!r}: the result takes {self.size} bytes, more than "
            f"the {self.limit} that may be kept (raise max_size, within the store's limit, "
            "or return less)"
        )


class FlightFailed(RemoteLockError):
    """The call that ran a ``single_flight`` function raised an exception whose type
    cannot be made again here (not importable, or not built from a message alone)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type_name, self.message = type_name, message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


class StoreError(RemoteLockError):
    """A store failed to perform a step; always raised ``from`` the driver's exception."""


class StoreUnavailable(StoreError, ConnectionError):
    """The store could not be reached, dropped the connection, or did not answer in time."""


class StoreConfigError(RemoteLockError, ValueError):
    """A store cannot be built: bad URL, unknown scheme, missing extra, or no usable default."""


__all__ = [
    "FlightFailed",
    "LimitConflict",
    "LockLost",
    "LockTimeout",
    "RemoteLockError",
    "ResultTooLarge",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailable",
]
