"""What the Redis stores and their permits share, without I/O: names, replies, errors.

Kept apart from the stores so that each of them (and the permit mixins) can import it
at module level: no module of this package imports another store module. Everything
here is the same for the sync and the asyncio store, so it is written by hand once
and never generated.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import redis.exceptions as rex

from ...errors import LimitConflict, StoreConfigError
from ..base import (
    CROSS_HOST,
    CROSS_PROCESS,
    EXPIRY,
    FAIR,
    FENCING,
    NOTIFY,
    TOKEN_CHECKED,
)
from ..shared.translate import Translate
from .bells import BUSY, LISTEN, PERMIT, Wait

CAPABILITIES: Final = frozenset(
    {CROSS_PROCESS, CROSS_HOST, NOTIFY, FENCING, TOKEN_CHECKED, EXPIRY, FAIR}
)
MAX_RESULT_BYTES: Final = 64 * 1024 * 1024
"""Longest kept result (a Redis string takes 512 MB, but one reply of it blocks the
server and the connection while it travels)."""
LEASE_STEPS: Final = frozenset(
    {
        "release", "extend", "extend_many", "release_permit", "extend_permit",
        "release_shared", "extend_shared",
    }
)  # fmt: skip
"""Scripts that keep or end a lease already held: they run on the store's lease client
(see :func:`lease_client_of`), never queued behind a crowd of acquires."""


class Layout(NamedTuple):
    """The Redis names of one lock; they share one hash tag (one Cluster slot)."""

    base: str  # ``<prefix>:{<key>}``: the lock scripts' KEYS[1]
    lock: str  # the holder's token, with the lease as its expiry
    fence: str  # the fencing counter
    bell: str  # the pub/sub channel of its wake-ups


@functools.lru_cache(maxsize=4096)
def base_name(prefix: str, key: str) -> str:
    """``<prefix>:{<key>}``. ``%`` and ``}`` in the key are escaped, so the hash tag is
    always the whole key and never ends early or comes out empty."""
    return f"{prefix}:{{{key.replace('%', '%25').replace('}', '%7D')}}}"


@functools.lru_cache(maxsize=4096)
def layout(prefix: str, key: str) -> Layout:
    """``<prefix>:{<key>}:lock`` and friends (see :func:`base_name`). Cached: every
    acquire and release asks for it."""
    base = base_name(prefix, key)
    return Layout(base, f"{base}:lock", f"{base}:fence", f"{base}:bell")


def key_of(redis_key: str, prefix: str, suffix: str = "lock") -> str | None:
    """The lock key a ``...:lock`` (or ``...:<suffix>``) Redis key belongs to (``None``
    if it is not one)."""
    head, tail = prefix + ":{", "}:" + suffix
    if not (redis_key.startswith(head) and redis_key.endswith(tail)):
        return None
    return redis_key[len(head) : -len(tail)].replace("%7D", "}").replace("%25", "%")


def ms(seconds: float) -> int:
    """Whole milliseconds for PX/PEXPIRE, never rounded down to 0 (that would be no lease)."""
    return max(1, math.ceil(seconds * 1000))


def text(value: Any) -> str | None:
    """A reply as ``str`` whether the client decodes responses or not."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


_UNAVAILABLE: Final = (
    rex.ConnectionError,
    rex.TimeoutError,
    OSError,
    rex.ReadOnlyError,
    rex.ClusterDownError,
    rex.TryAgainError,
)


def refuse_url(client: object, store: str) -> None:
    """A store takes a client (or nothing but ``from_url``): a URL or ``None`` is refused
    here, with the way to build one from a URL, rather than failing on first use."""
    if client is None or isinstance(client, (str, bytes)):
        raise StoreConfigError(f"{store} takes a client; for a URL use {store}.from_url")


class translate(Translate):
    """Redis errors become StoreErrors (connection trouble: StoreUnavailable)."""

    __slots__ = ()
    unavailable = _UNAVAILABLE
    failed = (rex.RedisError, rex.RedisClusterException)


def by_slot(client: object, names: list[str]) -> list[list[int]]:
    """The indexes of ``names`` grouped by Cluster slot, for one script per group (a
    script's keys must share a slot); one group on a client that is not a Cluster."""
    slot_of = getattr(client, "keyslot", None)
    if slot_of is None:
        return [list(range(len(names)))] if names else []
    groups: dict[int, list[int]] = {}
    for index, name in enumerate(names):
        groups.setdefault(slot_of(name), []).append(index)
    return list(groups.values())


def renewal_calls(
    client: object, prefix: str, leases: Sequence[tuple[str, str, float]], retain_ms: int
) -> list[tuple[list[int], list[str], list[int | str]]]:
    """The ``extend_many`` script calls that renew ``leases``, one per Cluster slot: each
    the indexes of its leases, its KEYS and its ARGV (see ``EXTEND_MANY_SCRIPT``)."""
    bases = [base_name(prefix, key) for key, _, _ in leases]
    calls: list[tuple[list[int], list[str], list[int | str]]] = []
    for group in by_slot(client, bases):
        asked = []
        for index in group:
            _, token, ttl = leases[index]
            size = len(token) if token.isascii() else len(token.encode())
            asked.append(f"{ms(ttl)}:{size}:{token}")
        calls.append((group, [bases[index] for index in group], [retain_ms, "".join(asked)]))
    return calls


def renewed(reply: Any, count: int) -> list[bool]:
    """An ``extend_many`` reply: for each of ``count`` leases, whether it was reset."""
    flags = text(reply) or ""
    if len(flags) != count:
        raise rex.ResponseError(f"extend_many answered {flags!r} for {count} leases")
    return [flag == "1" for flag in flags]


def describe(client: Any) -> str:
    """Where a client points, briefly (error messages quote it; no passwords)."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    if "host" in kwargs:
        return f"redis://{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    nodes = getattr(client, "startup_nodes", None)
    if nodes:  # node names (``host:port``), or nodes that carry one
        names = sorted(str(getattr(node, "name", node)) for node in nodes)
        return "redis+cluster://" + ",".join(names)
    return type(client).__name__


def subscriber_of(client: Any) -> Any:
    """The client a store's subscriber reads wake-ups with: ``client`` itself, or, when
    ``client`` has a blocking pool (one remotelock built from a URL), a client on a
    connection of its own with the same settings, so the subscriber never queues behind
    the store's steps for a connection, nor keeps one of theirs. The caller closes it."""
    return _beside(client, blocking=False)


def lease_client_of(client: Any) -> Any:
    """The client for the steps that keep or end a lease (:data:`LEASE_STEPS`):
    ``client`` itself, or, when ``client`` has a blocking pool (one remotelock built
    from a URL), one more blocking connection with the same settings, so a crowd of
    acquires queued for the pool never delays a holder's release or renewal (and its
    lease run out meanwhile). The caller closes it."""
    return _beside(client, blocking=True)


def _beside(client: Any, blocking: bool) -> Any:
    pool: Any = getattr(client, "connection_pool", None)
    if type(pool).__name__ != "BlockingConnectionPool":
        return client
    if blocking:
        own = type(pool)(
            connection_class=pool.connection_class,
            max_connections=1,
            timeout=pool.timeout,
            **pool.connection_kwargs,
        )
    else:
        plain = next(kind for kind in type(pool).__mro__ if kind.__name__ == "ConnectionPool")
        own = plain(
            connection_class=pool.connection_class, max_connections=1, **pool.connection_kwargs
        )
    return type(client).from_pool(own)


# -- counted permits ----------------------------------------------------------------------


class PermitLayout(NamedTuple):
    """The Redis names of one key's permits (the lock's hash tag: one Cluster slot)."""

    permits: str
    fences: str
    limit: str
    counter: str
    wait: str  # present while a refused caller may wait: releases ring the bell
    released: str  # tokens that gave their permit back lately (repeats return 1)
    bell: str  # the key's pub/sub channel (shared with its lock)

    @property
    def acquire_keys(self) -> list[str]:
        return [self.permits, self.fences, self.limit, self.counter, self.wait, self.released]

    @property
    def extend_keys(self) -> list[str]:
        return [self.permits, self.fences, self.limit, self.counter]

    @property
    def release_keys(self) -> list[str]:
        return [self.permits, self.fences, self.wait, self.released]

    @property
    def listen_keys(self) -> list[str]:
        return [self.permits, self.fences, self.limit, self.wait]


@functools.lru_cache(maxsize=4096)
def permit_layout(prefix: str, key: str) -> PermitLayout:
    """``<prefix>:{<key>}:permits`` and friends, under the lock's own hash tag."""
    lock = layout(prefix, key)
    base = lock.base
    return PermitLayout(
        f"{base}:permits", f"{base}:pfences", f"{base}:plimit", f"{base}:pcounter",
        f"{base}:pwait", f"{base}:preleased", lock.bell,
    )  # fmt: skip


def conflict(exc: rex.ResponseError, key: str, asked: int) -> LimitConflict | None:
    """The script's ``LIMIT <n>`` error as a :class:`LimitConflict` (else ``None``)."""
    message = str(exc)
    if not message.startswith("LIMIT "):
        return None
    return LimitConflict(key, int(message.split()[1]), asked)


class Refused(NamedTuple):
    """What a refused request taught: when it was sent, when the first permit ends,
    and the limit (a waiter can tell a free permit from the holder count). For a
    refused reader: when a reader may enter at the latest, and no limit (0)."""

    asked: float
    free_at: float
    limit: int


REFUSALS_KEPT: Final = 1024
"""Refusals remembered per store: a refused caller that never waits leaves one behind."""


def note_refusal(refused: dict[str, Refused], key: str, what: Refused) -> None:
    """Remember ``what`` for ``key``'s next wait, forgetting the stale ones when many
    keys were refused and never waited for (memory stays bounded however many keys)."""
    refused[key] = what
    if len(refused) > REFUSALS_KEPT:
        now = time.monotonic()
        for name in [name for name, old in refused.items() if old.free_at < now]:
            del refused[name]
        while len(refused) > REFUSALS_KEPT // 2:  # all still fresh: drop the oldest
            del refused[next(iter(refused))]


def permit_reply(
    reply: int, key: str, asked: float, limit: int, refused: dict[str, Refused]
) -> int | None:
    """A fencing token, or ``None`` after noting what the refusal taught."""
    if reply > 0:
        return reply
    note_refusal(refused, key, Refused(asked, time.monotonic() - reply / 1000, limit))
    return None


def listened(asked: float, reply: Any) -> Refused | None:
    """A LISTEN_PERMIT reply as what a refusal would have taught (``None``: free now)."""
    left, limit = int(reply[0]), int(reply[1])
    if left < 0:
        return None
    return Refused(asked, time.monotonic() + left / 1000, limit)


def permit_wait(k: PermitLayout, refused: Refused, until: float) -> Wait:
    """The wait of ``wait_permit``: until a release, the first permit's end, or ``until``."""
    return Wait(k.bell, PERMIT, None, refused.asked, min(until, refused.free_at + 0.001))


def shared_wait(bell: str, refused: Refused, until: float) -> Wait:
    """The wait of ``wait_shared``: until a release of the exclusive lock (``LISTEN``
    hears every change of hands), the end of what refused the reader, or ``until``."""
    return Wait(bell, LISTEN, None, refused.asked, min(until, refused.free_at + 0.001))


def vacancy(holders: Any, limit: int) -> object:
    """A look at the holders: ``None`` if a permit is free (acquire again), else BUSY."""
    return None if len(holders) < limit else BUSY


__all__ = [
    "CAPABILITIES",
    "LEASE_STEPS",
    "MAX_RESULT_BYTES",
    "Layout",
    "PermitLayout",
    "Refused",
    "base_name",
    "by_slot",
    "conflict",
    "describe",
    "key_of",
    "layout",
    "lease_client_of",
    "listened",
    "ms",
    "permit_layout",
    "permit_reply",
    "permit_wait",
    "refuse_url",
    "shared_wait",
    "subscriber_of",
    "text",
    "translate",
    "vacancy",
]
