"""Results kept in this process's memory, for :class:`~remotelock.stores.memory.MemoryStore`
(the :class:`~remotelock.stores.base.ResultStore` methods, as a mixin).

Each value carries its expiry on the store's clock; a read past it answers ``None``,
and every put sweeps out the values that ran out, so nothing stays.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

MAX_RESULT_BYTES: Final = 64 * 1024 * 1024
"""Longest value a memory store keeps (it is only memory, but not without bound)."""


class KeptResults:
    """``put_result`` / ``get_result`` on the store's ``_clock`` (the store calls
    :meth:`_keep_results` as it starts)."""

    max_result_bytes = MAX_RESULT_BYTES
    _clock: Callable[[], float]

    def _keep_results(self) -> None:
        self._kept: dict[str, tuple[bytes, float]] = {}
        self._kept_mutex = threading.Lock()

    def put_result(self, key: str, data: bytes, ttl: float) -> None:
        """Keep ``data`` as ``key``'s value for ``ttl`` seconds."""
        kept = self._kept
        with self._kept_mutex:
            now = self._clock()
            for name in [name for name, (_, until) in kept.items() if until <= now]:
                del kept[name]
            kept[key] = (bytes(data), now + ttl)

    def get_result(self, key: str) -> bytes | None:
        """``key``'s value, or ``None`` if it has none (or it ran out)."""
        with self._kept_mutex:
            found = self._kept.get(key)
            return found[0] if found is not None and found[1] > self._clock() else None


__all__ = ["MAX_RESULT_BYTES", "KeptResults"]
