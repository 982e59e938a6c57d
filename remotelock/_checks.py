"""Limits every lock obeys, checked once at the edge: key size and shape, lease length.

Every store can hold these keys and leases, so a program that runs on the memory store
in its tests behaves the same on PostgreSQL in production. The limits are generous
for real use and small enough that no store's own limit (PostgreSQL's index entries,
NOTIFY payloads, timer overflows) is ever reached.
"""

from __future__ import annotations

from typing import Final

from ._time import to_seconds

MAX_KEY_BYTES: Final = 1024
"""Longest key, in bytes of UTF-8. Longer keys are refused with :class:`ValueError`."""

MIN_TTL: Final = 0.01
"""Shortest lease, in seconds (10 ms): a shorter lease would run out in transit."""

MAX_TTL: Final = 7 * 24 * 3600.0
"""Longest lease, in seconds (7 days): a crashed holder must free its lock some day."""

_PREVIEW_CHARS: Final = 40


def key_preview(key: str) -> str:
    """``key`` for messages: whole if short, else its start and its size.

    Error messages and logs quote keys; a megabyte-long key would drown them.
    """
    if len(key) <= _PREVIEW_CHARS:
        return repr(key)
    size = len(key.encode("utf-8", "surrogatepass"))
    return f"{key[:_PREVIEW_CHARS]!r}... ({size} bytes)"


def check_ttl(value: object, name: str = "ttl") -> float:
    """A lease length in seconds, between :data:`MIN_TTL` and :data:`MAX_TTL`.

    :raises TypeError: not a number of seconds or a ``timedelta``.
    :raises ValueError: out of range (the message names the argument and the range).
    """
    seconds = to_seconds(value, name)
    if not MIN_TTL <= seconds <= MAX_TTL:
        raise ValueError(
            f"{name} must be between {MIN_TTL:g} s and {MAX_TTL:g} s (7 days), got {value!r}"
        )
    return seconds


def check_key(key: object, name: str = "key") -> str:
    """``key`` itself if it can name a lock on every store, else a clear error.

    :raises TypeError: not a string.
    :raises ValueError: empty, longer than :data:`MAX_KEY_BYTES` bytes of UTF-8, or
        holding a NUL character or a lone surrogate (neither can be stored everywhere).
    """
    if not isinstance(key, str):
        raise TypeError(f"{name} must be a str, got {type(key).__name__}")
    if not key:
        raise ValueError(f"{name} must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} {key_preview(key)} holds a lone surrogate at position {exc.start}; "
            "keys must be valid Unicode text"
        ) from None
    if size > MAX_KEY_BYTES:
        raise ValueError(
            f"{name} {key_preview(key)} is longer than {MAX_KEY_BYTES} bytes of UTF-8; "
            "hash long keys (e.g. hashlib.sha256) before locking on them"
        )
    if "\x00" in key:
        raise ValueError(f"{name} {key_preview(key)} holds a NUL character")
    return key


__all__ = ["MAX_KEY_BYTES", "MAX_TTL", "MIN_TTL", "check_key", "check_ttl", "key_preview"]
