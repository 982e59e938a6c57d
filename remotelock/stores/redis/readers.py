# Generated from remotelock/stores/redis/readers_aio.py by tools/unasync.py.
# Do not edit: edit the source, then run the tool.
"""Shared (reader) leases of the Redis stores: a mixin of the store class.

Written once, in its asyncio form (``readers_aio.py``); the sync mixin (``readers.py``)
is generated from it by ``tools/unasync.py``. The rules are
:mod:`remotelock.stores.readers`'; each step is one script from
:mod:`remotelock.stores.redis.reader_lua`, on the lock's own base name, so that an
exclusive acquire and a shared one see each other in one atomic step. Readers do not
queue: a refused reader learns from the refusal until when the key stays closed to it
(the exclusive lease, or a waiting writer's mark), and its wait sleeps at most that
long, woken early by the exclusive release (any change of hands on the key's bell).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .bells import BUSY
from .common import Refused, layout, ms, note_refusal, shared_wait, text, translate

if TYPE_CHECKING:
    from .connect import Clients


class RedisReaders:
    """The :class:`~remotelock.stores.readers.SharedStore` methods of the Redis store."""

    if TYPE_CHECKING:  # provided by the store class
        prefix: str
        _clients: Clients
        _grace_ms: int  # the longest lease a hand-over gives a queued writer
        _retain_ms: int  # how long a key's fencing state outlives its last lease
        _shared_free_at: dict[str, Refused]  # key -> its last refused reader here

        def _run(self, name: str, keys: list[str], args: list[Any]) -> Any: ...

    def acquire_shared(self, key: str, token: str, ttl: float) -> int | None:
        """Take a shared lease of ``key`` (see
        :class:`~remotelock.stores.readers.SharedStore`); a refusal teaches the next
        :meth:`wait_shared` how long to wait, and asks the exclusive release to ring."""
        base = layout(self.prefix, key).base
        asked = time.monotonic()
        with translate(self, "acquire_shared", key):
            args = [token, ms(ttl), self._retain_ms]
            reply = int(self._run("acquire_shared", [base], args))
        if reply > 0:
            return reply
        if reply < 0:  # else the key is closed for as long as a lock without expiry
            refused = Refused(asked, time.monotonic() - reply / 1000, 0)
            note_refusal(self._shared_free_at, key, refused)
        return None

    def release_shared(self, key: str, token: str) -> bool:
        """Give back ``token``'s shared lease of ``key``; the last one lets the first
        writer in line in. A repeated release by the same token returns ``True``: a
        retry after a lost reply."""
        base = layout(self.prefix, key).base
        with translate(self, "release_shared", key):
            args = [token, self._grace_ms, self._retain_ms]
            return bool(self._run("release_shared", [base], args))

    def extend_shared(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s shared lease of ``key`` if it still holds it."""
        base = layout(self.prefix, key).base
        with translate(self, "extend_shared", key):
            args = [token, ms(ttl), self._retain_ms]
            return bool(self._run("extend_shared", [base], args))

    def shared_holders(self, key: str) -> list[str]:
        """The tokens holding a shared lease of ``key`` now, by the server's clock."""
        readers = f"{layout(self.prefix, key).base}:readers"
        with translate(self, "shared_holders", key):
            holders = self._run("shared_holders", [readers], [])
        return [text(token) or "" for token in holders]

    def wait_shared(self, key: str, timeout: float) -> None:
        """Sleep (holding no connection) until the exclusive lock is released, the
        exclusive lease or the writers' mark runs out, or ``timeout``."""
        k = layout(self.prefix, key)
        until = time.monotonic() + timeout
        refused = self._shared_free_at.pop(key, None)
        with translate(self, "wait_shared", key):
            if refused is None:  # no refusal to learn from: ask to hear releases
                asked = time.monotonic()
                left = int(self._run("listen_shared", [k.base], [ms(timeout)]))
                if left < 0:
                    return
                refused = Refused(asked, time.monotonic() + left / 1000, 0)

            def check() -> object:
                left = max(until - time.monotonic(), 0.001)
                closed = int(self._run("listen_shared", [k.base], [ms(left)]))
                return None if closed < 0 else BUSY

            self._clients.doorbell().wait(shared_wait(k.bell, refused, until), check)


__all__ = ["RedisReaders"]
