"""Driver errors become StoreErrors: one translator, each network store names its errors."""

from __future__ import annotations

from typing import Any, ClassVar

from ..._checks import key_preview
from ...errors import StoreError, StoreUnavailable
from .redact import redact


class Translate:
    """A context manager around one store step that re-raises driver errors as
    :class:`StoreUnavailable` (``unavailable``) or :class:`StoreError` (``failed``),
    chained from the original and naming the store, the step and the key (its start,
    if long). The driver's message is redacted: no password reaches the message.

    A class rather than a generator context manager: it runs twice per lock cycle.
    Subclasses set the two tuples.
    """

    __slots__ = ("key", "step", "store")

    unavailable: ClassVar[tuple[type[BaseException], ...]] = ()
    failed: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(self, store: object, step: str, key: str) -> None:
        self.store = store
        self.step = step
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None:
            return
        # A key can be long (key_preview) and a driver's words can quote a connection
        # string (redact): neither may end up whole in a message.
        words = " ".join(redact(exc).split())
        where = f"{self.store!r}: {self.step} {key_preview(self.key)}: {words}".rstrip()
        if isinstance(exc, self.unavailable):
            raise StoreUnavailable(where) from exc
        if isinstance(exc, self.failed):
            raise StoreError(where) from exc


__all__ = ["Translate"]
