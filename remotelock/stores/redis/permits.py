"""Counted permits for :class:`~remotelock.stores.redis.store.RedisStore` (a mixin).

Each step is one script from :mod:`remotelock.stores.redis.permit_lua`. A release
rings the key's bell (``p``) while a refused caller may wait, and each process wakes
one local permit waiter per freed permit (see :mod:`remotelock.stores.redis.bells`).
A waiter never sleeps past the moment the first held permit runs out, learnt from its
last refused attempt.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import redis.exceptions as rex

from ...errors import LimitConflict
from .bells import BUSY, PERMIT, Wait
from .common import ms, text, translate

if TYPE_CHECKING:
    from .doorbell import Doorbell


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
    def release_keys(self) -> list[str]:
        return [self.permits, self.fences, self.wait, self.released]

    @property
    def listen_keys(self) -> list[str]:
        return [self.permits, self.fences, self.limit, self.wait]


@functools.lru_cache(maxsize=4096)
def permit_layout(prefix: str, key: str) -> PermitLayout:
    base = f"{prefix}:{{{key.replace('%', '%25').replace('}', '%7D')}}}"
    return PermitLayout(
        f"{base}:permits", f"{base}:pfences", f"{base}:plimit", f"{base}:pcounter",
        f"{base}:pwait", f"{base}:preleased", f"{base}:bell",
    )  # fmt: skip


def conflict(exc: rex.ResponseError, key: str, asked: int) -> LimitConflict | None:
    """The script's ``LIMIT <n>`` error as a :class:`LimitConflict` (else ``None``)."""
    message = str(exc)
    if not message.startswith("LIMIT "):
        return None
    return LimitConflict(key, int(message.split()[1]), asked)


class Refused(NamedTuple):
    """What a refused request taught: when it was sent, when the first permit ends,
    and the limit (a waiter can tell a free permit from the holder count)."""

    asked: float
    free_at: float
    limit: int


def permit_reply(
    reply: int, key: str, asked: float, limit: int, refused: dict[str, Refused]
) -> int | None:
    """A fencing token, or ``None`` after noting what the refusal taught."""
    if reply > 0:
        return reply
    refused[key] = Refused(asked, time.monotonic() - reply / 1000, limit)
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


def vacancy(holders: Any, limit: int) -> object:
    """A look at the holders: ``None`` if a permit is free (acquire again), else BUSY."""
    return None if len(holders) < limit else BUSY


class RedisPermits:
    """The :class:`~remotelock.stores.base.PermitStore` methods of RedisStore."""

    if TYPE_CHECKING:  # provided by RedisStore
        prefix: str
        client: Any
        _doorbell: Doorbell
        _permit_free_at: dict[str, Refused]

        def _run(self, name: str, keys: list[str], args: list[Any]) -> Any: ...

    def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """Take one of ``limit`` permits of ``key`` (see :class:`PermitStore`)."""
        k = permit_layout(self.prefix, key)
        asked = time.monotonic()
        with translate(self, "acquire_permit", key):
            try:
                reply = self._run("acquire_permit", k.acquire_keys, [token, ms(ttl), limit])
            except rex.ResponseError as exc:
                limit_error = conflict(exc, key, limit)
                if limit_error is None:
                    raise
                raise limit_error from None
        return permit_reply(int(reply), key, asked, limit, self._permit_free_at)

    def release_permit(self, key: str, token: str) -> bool:
        """Give back ``token``'s permit of ``key`` (waking one waiter). A repeated
        release by the same token returns ``True``: a retry after a lost reply."""
        k = permit_layout(self.prefix, key)
        with translate(self, "release_permit", key):
            return bool(self._run("release_permit", k.release_keys, [token, k.bell]))

    def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s permit of ``key`` if it still holds it."""
        k = permit_layout(self.prefix, key)
        with translate(self, "extend_permit", key):
            keys = [k.permits, k.fences, k.limit]
            return bool(self._run("extend_permit", keys, [token, ms(ttl)]))

    def permit_holders(self, key: str) -> list[str]:
        """The tokens holding a permit of ``key``."""
        with translate(self, "permit_holders", key):
            holders = self._run("permit_holders", [permit_layout(self.prefix, key).permits], [])
        return [text(token) or "" for token in holders]

    def wait_permit(self, key: str, timeout: float) -> None:
        """Sleep (holding no connection) until a release frees a permit, the first
        permit runs out, or ``timeout``."""
        k = permit_layout(self.prefix, key)
        until = time.monotonic() + timeout
        refused = self._permit_free_at.pop(key, None)
        with translate(self, "wait_permit", key):
            if refused is None:  # no refusal to learn from: ask to hear releases
                asked = time.monotonic()
                refused = listened(asked, self._run("listen_permit", k.listen_keys, [ms(timeout)]))
                if refused is None:
                    return
            limit = refused.limit

            def check() -> object:
                return vacancy(self._run("permit_holders", [k.permits], []), limit)

            self._doorbell.wait(permit_wait(k, refused, until), check)


__all__ = [
    "PermitLayout",
    "RedisPermits",
    "Refused",
    "conflict",
    "listened",
    "permit_layout",
    "permit_reply",
    "permit_wait",
    "vacancy",
]
