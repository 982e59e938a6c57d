"""What one acquire attempt (and a whole acquire) can come to, as types.

An attempt takes the lock (:class:`Taken`), finds it held (:data:`BUSY`) or finds that
``skip_if`` is true (:data:`SKIPPED`); a wait that ``stop`` ends comes to
:class:`GaveUp`. The retry controller and both engines share these, so each outcome is
spelled one way everywhere and the type checker sees every case.
"""

from __future__ import annotations

from typing import Final, NamedTuple, final

from .lease import local_deadline


@final
class Busy:
    """Another owner holds the lock: wait, then try again."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "BUSY"


@final
class Skipped:
    """``skip_if`` was true: run without the lock."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIPPED"


BUSY: Final = Busy()
SKIPPED: Final = Skipped()


class Taken(NamedTuple):
    """An attempt took the lock (or was handed it)."""

    fence: int
    started: float  # monotonic time before the request: the local deadline counts from it
    granted: float  # seconds the store granted (short for a handed-over lock)

    def deadline(self) -> float:
        """When the lease taken is no longer surely held (see :func:`local_deadline`)."""
        return local_deadline(self.started, self.granted)


class GaveUp(NamedTuple):
    """``stop`` fired while the lock stayed busy."""

    attempts: int


Attempt = Taken | Busy | Skipped
"""What one attempt comes to."""

Outcome = Taken | Busy | Skipped | GaveUp
"""What an acquire comes to (``BUSY`` only when it was not blocking)."""


__all__ = ["BUSY", "SKIPPED", "Attempt", "Busy", "GaveUp", "Outcome", "Skipped", "Taken"]
