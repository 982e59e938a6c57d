"""What ``remotelock ls`` asks a store beyond :class:`~remotelock.stores.base.LockAdmin`:
the holders of counted permits, and how many wait for a key (where the store knows).

Optional, like the admin operations: a store without them still lists its locks. Both
are for operators, not for hot paths (they scan).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PermitInfo:
    """One holder of one of ``limit`` permits of ``key``."""

    key: str
    limit: int
    token: str
    fencing_token: int | None
    expires_in: float | None
    """Seconds until the holder's lease runs out, by the store's clock."""


@runtime_checkable
class PermitAdmin(Protocol):
    """Optional: list the holders of counted permits."""

    def iter_permits(self, prefix: str = "") -> Iterator[PermitInfo]:
        """Every unexpired permit holder of the keys starting with ``prefix``, by key."""
        ...


@runtime_checkable
class WaiterCount(Protocol):
    """Optional: how many wait for a key (a store that keeps its waiters in line)."""

    def waiting(self, key: str) -> int:
        """The tokens waiting in line for ``key`` now."""
        ...


__all__ = ["PermitAdmin", "PermitInfo", "WaiterCount"]
