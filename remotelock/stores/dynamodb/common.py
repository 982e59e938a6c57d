"""What the DynamoDB store, its permits and its async twin share, free of I/O.

The item layout, the client clock, reading DynamoDB's typed attribute values, and the
record of a refused acquire (what ``ReturnValuesOnConditionCheckFailure=ALL_OLD``
handed back), which lets a waiter sleep until the holder's lease ends without asking
DynamoDB again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from ..base import CROSS_HOST, CROSS_PROCESS, EXPIRY, FENCING, TOKEN_CHECKED

log = logging.getLogger("remotelock.stores.dynamodb")

CAPABILITIES: Final = frozenset({CROSS_PROCESS, CROSS_HOST, FENCING, TOKEN_CHECKED, EXPIRY})
"""No ``notify``: DynamoDB cannot push, so waiters poll (see :mod:`.waiting`)."""

PARTITION_KEY: Final = "pk"
"""The table's partition key: a String attribute, ``lock:<key>`` or ``permits:<key>``."""

TTL_ATTRIBUTE: Final = "expires"
"""Epoch seconds after which DynamoDB's TTL may delete an item (at least a day after
its last lease ends: see :data:`RETAIN`)."""

LOCK: Final = "lock:"
PERMITS: Final = "permits:"

RETAIN: Final = 86_400
"""Seconds an item outlives its last lease before TTL may delete it. A deleted item's
fence counter restarts from the clock in microseconds (see :func:`now_us`), which is
larger than any fence the item handed out as long as the clocks of its clients agree
to within this much and no key is taken more than once per microsecond."""

RELEASED_MARGIN: Final = 8
"""Releasing tokens a permit item remembers beyond its limit, so that a retried release
still finds its own. The store resends a release at once, so only the releases of the
other holders in that moment can push it out; a small record keeps the item small, and
a write costs one request unit per KB of item (about 40 bytes per entry)."""


def now_us() -> int:
    """This client's wall clock, in microseconds since the epoch.

    DynamoDB has no server clock that a condition can read, so every lease end is a
    client's wall-clock time. Wall time, not monotonic time: many machines compare it.
    """
    return time.time_ns() // 1000


def micros(seconds: float) -> int:
    """``seconds`` as a whole number of microseconds (at least 1)."""
    return max(1, round(seconds * 1_000_000))


def expires(lease_end_us: int) -> int:
    """The TTL attribute for an item whose latest lease ends at ``lease_end_us``."""
    return lease_end_us // 1_000_000 + 1 + RETAIN


def until(lease_end_us: int, skew_us: int) -> float:
    """A lease end (client wall clock, µs) as a local ``time.monotonic()`` deadline,
    moved ``skew_us`` later: when other clients may take the key."""
    return time.monotonic() + (lease_end_us + skew_us - now_us()) / 1_000_000


# -- typed attribute values -----------------------------------------------------------------

Item = Mapping[str, Any]
"""An item as the low-level client returns it: ``{"name": {"S": "..."}}`` and so on."""


def S(value: str) -> dict[str, str]:
    return {"S": value}


def N(value: int) -> dict[str, str]:
    return {"N": str(value)}


def text(item: Item, name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value.get("S"))


def number(item: Item, name: str) -> int | None:
    value = item.get(name)
    return None if value is None or "N" not in value else int(value["N"])


def numbers(item: Item, name: str) -> dict[str, int]:
    """A map attribute of numbers (``{"M": {"token": {"N": "..."}}}``) as a dict."""
    value = item.get(name)
    entries = {} if value is None else value.get("M", {})
    return {token: int(entry["N"]) for token, entry in entries.items()}


def strings(item: Item, name: str) -> set[str]:
    value = item.get(name)
    return set() if value is None else set(value.get("SS", ()))


def code_of(exc: BaseException) -> str:
    """The error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class Refused(Exception):
    """A conditional write whose condition failed; ``item`` is the item as it was
    (``ALL_OLD``; empty if there was none). Never leaves the store."""

    def __init__(self, item: Item) -> None:
        super().__init__("the conditional request failed")
        self.item = item


class Busy(NamedTuple):
    """What a waiter knows of a busy key: when it may be taken (``time.monotonic()``)."""

    free_at: float


class Refusals:
    """The last refusal of an acquire per key, so that the wait after it knows how long
    the holder's lease runs without a read of its own. Bounded: a program that only
    ever tries without waiting does not fill memory."""

    _MAX: Final = 4096

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._busy: dict[str, Busy] = {}

    def note(self, slot: str, busy: Busy) -> None:
        with self._mutex:
            if len(self._busy) >= self._MAX:
                self._busy.clear()
            self._busy[slot] = busy

    def forget(self, slot: str) -> None:
        with self._mutex:
            self._busy.pop(slot, None)

    def take(self, slot: str) -> Busy | None:
        """The refusal noted for ``slot`` (once: the next wait asks DynamoDB)."""
        with self._mutex:
            return self._busy.pop(slot, None)


__all__ = [
    "CAPABILITIES",
    "LOCK",
    "PARTITION_KEY",
    "PERMITS",
    "RELEASED_MARGIN",
    "RETAIN",
    "TTL_ATTRIBUTE",
    "Busy",
    "Item",
    "N",
    "Refusals",
    "Refused",
    "S",
    "code_of",
    "expires",
    "log",
    "micros",
    "now_us",
    "number",
    "numbers",
    "strings",
    "text",
    "until",
]
