"""Counted permits for :class:`~remotelock.stores.redis.RedisStore` (a mixin).

Each step is one script from :mod:`remotelock.stores._redis_lua`. Waiters block on
the key's wake-up list, where every release pushes one signal: one freed permit wakes
one waiter. A waiter never sleeps past the moment the first held permit runs out,
learnt from its last refused attempt.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import redis.exceptions as rex

from ..errors import LimitConflict


class PermitLayout(NamedTuple):
    """The Redis keys of one key's permits (the lock's hash tag: one Cluster slot)."""

    permits: str
    fences: str
    limit: str
    counter: str
    wake: str


@functools.lru_cache(maxsize=4096)
def permit_layout(prefix: str, key: str) -> PermitLayout:
    base = f"{prefix}:{{{key.replace('%', '%25').replace('}', '%7D')}}}"
    return PermitLayout(
        f"{base}:permits", f"{base}:pfences", f"{base}:plimit", f"{base}:pcounter",
        f"{base}:pwake",
    )  # fmt: skip


def conflict(exc: rex.ResponseError, key: str, asked: int) -> LimitConflict | None:
    """The script's ``LIMIT <n>`` error as a :class:`LimitConflict` (else ``None``)."""
    message = str(exc)
    if not message.startswith("LIMIT "):
        return None
    return LimitConflict(key, int(message.split()[1]), asked)


def permit_reply(reply: int, key: str, free_at: dict[str, float]) -> int | None:
    """A fencing token, or ``None`` after noting when the first permit runs out."""
    if reply > 0:
        return reply
    free_at[key] = time.monotonic() - reply / 1000
    return None


class RedisPermits:
    """The :class:`~remotelock.stores.base.PermitStore` methods of RedisStore."""

    if TYPE_CHECKING:  # provided by RedisStore
        prefix: str
        client: Any
        _max_block: float
        _permit_free_at: dict[str, float]

        def _run(self, name: str, keys: list[str], args: list[Any]) -> Any: ...

    def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """Take one of ``limit`` permits of ``key`` (see :class:`PermitStore`)."""
        from .redis import ms, translate

        k = permit_layout(self.prefix, key)
        with translate(self, "acquire_permit", key):
            try:
                reply = self._run(
                    "acquire_permit", [k.permits, k.fences, k.limit, k.counter],
                    [token, ms(ttl), limit],
                )  # fmt: skip
            except rex.ResponseError as exc:
                limit_error = conflict(exc, key, limit)
                if limit_error is None:
                    raise
                raise limit_error from None
        return permit_reply(int(reply), key, self._permit_free_at)

    def release_permit(self, key: str, token: str) -> bool:
        """Give back ``token``'s permit of ``key`` (waking one waiter)."""
        from .redis import translate

        k = permit_layout(self.prefix, key)
        with translate(self, "release_permit", key):
            return bool(self._run("release_permit", [k.permits, k.fences, k.wake], [token]))

    def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s permit of ``key`` if it still holds it."""
        from .redis import ms, translate

        k = permit_layout(self.prefix, key)
        with translate(self, "extend_permit", key):
            keys = [k.permits, k.fences, k.limit]
            return bool(self._run("extend_permit", keys, [token, ms(ttl)]))

    def permit_holders(self, key: str) -> list[str]:
        """The tokens holding a permit of ``key``."""
        from .redis import text, translate

        with translate(self, "permit_holders", key):
            holders = self._run("permit_holders", [permit_layout(self.prefix, key).permits], [])
        return [text(token) or "" for token in holders]

    def wait_permit(self, key: str, timeout: float) -> None:
        """Block until a release signals a free permit, the first permit runs out, or
        ``timeout``."""
        from .redis import translate

        wake = permit_layout(self.prefix, key).wake
        deadline = time.monotonic() + timeout
        free_at = self._permit_free_at.pop(key, None)
        if free_at is not None:
            deadline = min(deadline, free_at + 0.001)
        with translate(self, "wait_permit", key):
            while (left := deadline - time.monotonic()) >= 0.002:
                if self.client.blpop([wake], timeout=min(left, self._max_block)):
                    return


__all__ = ["PermitLayout", "RedisPermits", "conflict", "permit_layout", "permit_reply"]
