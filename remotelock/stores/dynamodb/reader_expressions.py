"""The requests behind shared (reader) leases, and the choice between them.

Conventions as in :mod:`remotelock.stores.dynamodb.expressions`. Readers live in the
key's lock item (``pk = "lock:<key>"``) beside the exclusive holder, so that one
conditional write sees both kinds:

- ``readers`` (M: token -> lease end, µs of the reader's clock) and ``rfences`` (M:
  token -> its fencing token). Two maps, not one map of pairs: a reader's fence is
  computed by the write that adds it (``fence + 1``, from the counter exclusive takes
  bump too), and DynamoDB cannot put a computed value inside a new map entry, nor
  set an entry and one of its own fields in one write.
- ``rend`` (N): an upper bound of every entry's lease end. DynamoDB cannot look
  through a map in a condition, so the exclusive take checks ``rend`` (and
  ``size(readers)``) instead. Every write that sets a lease end raises ``rend`` to it
  (and ``expires`` with it) or requires ``rend`` to be later already: there is no
  ``max`` in an update expression, so the request chooses one of the two from what it
  last saw, and the other is sent if it was wrong (:class:`Lease`).
- ``mark`` (N): the writers' mark (µs): until then no new reader enters.
- ``rgone`` (M: slot -> SS of one token): the readers that released recently, one per
  slot of :data:`SLOTS` (the slot is a hash of the token), so that a retried release
  after a lost reply finds its own record without the record ever growing. Taking a
  shared lease deletes the taker's own record.

``readers`` exists on an item once any reader or (this version's) exclusive holder
wrote it; a request that adds a map entry requires it (``attribute_exists``) and
:func:`create` makes it when it is missing. Entries of readers that crashed are
dropped by :func:`sweep` on the condition that each is still the entry that was seen.
"""

from __future__ import annotations

import zlib
from typing import Any, Final, NamedTuple

from .common import Item, N, expires, number, numbers, text
from .expressions import Request, lock_key, update

SLOTS: Final = 8
"""Slots of the record of releasing readers: a retried release is recognised unless
another reader whose token falls in the same slot released in between."""

MAX_DROP: Final = 64
"""Run-out entries one sweep drops at most (each adds to the expression's length)."""

_ALL_OLD: Final[dict[str, Any]] = {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
_EMPTY: Final[dict[str, Any]] = {"M": {}}
_FREE: Final = (
    "(attribute_not_exists(#t) OR #l < :cut) AND (attribute_not_exists(#m) OR #m < :now)"
)
"""No live exclusive lease (by the skew margin) and no live writers' mark."""


def slot(token: str) -> str:
    """The ``rgone`` slot of ``token`` (stable across processes, unlike ``hash``)."""
    return str(zlib.crc32(token.encode()) % SLOTS)


class ReaderState(NamedTuple):
    """A lock item as a reader sees it (from ``ALL_OLD`` or ``ALL_NEW``)."""

    holder: str | None
    lease: int
    readers: dict[str, int] | None  # None: the item has no readers map (or no item)
    fences: dict[str, int]
    rend: int | None
    mark: int | None
    fence: int | None
    gone: dict[str, set[str]]

    @classmethod
    def of(cls, item: Item) -> ReaderState:
        gone = (item.get("rgone") or {}).get("M", {})
        return cls(
            text(item, "token"),
            number(item, "lease") or 0,
            numbers(item, "readers") if "readers" in item else None,
            numbers(item, "rfences"),
            number(item, "rend"),
            number(item, "mark"),
            number(item, "fence"),
            {name: set(value.get("SS", ())) for name, value in gone.items()},
        )

    def writer(self, cut: int) -> int | None:
        """The exclusive lease end, if that lease still keeps readers out."""
        return self.lease if self.holder is not None and self.lease >= cut else None

    def live(self, cut: int) -> dict[str, int]:
        """Readers whose lease ended no earlier than ``cut``."""
        return {token: end for token, end in (self.readers or {}).items() if end >= cut}

    def dead(self, cut: int) -> list[tuple[str, int]]:
        """Reader entries whose lease ended before ``cut``, oldest first (at most
        :data:`MAX_DROP`)."""
        found = [(token, end) for token, end in (self.readers or {}).items() if end < cut]
        return sorted(found, key=lambda entry: entry[1])[:MAX_DROP]

    def keeps(self, end: int) -> bool:
        """Whether a lease ending at ``end`` must leave ``rend`` as it is (it is later)."""
        return bool(self.readers) and self.rend is not None and self.rend > end


# -- what to send ---------------------------------------------------------------------------


class Lease(NamedTuple):
    """Write ``token``'s lease end: ``fresh`` as a new entry with a new fence (else
    renew its own live entry); ``keep`` leaves ``rend`` (later already) as it is."""

    fresh: bool = True
    keep: bool = False


class Create(NamedTuple):
    """The item has no readers map: make it with ``token`` in it, fence ``fence``,
    on the condition that the key's counter is still ``seen`` (``None``: no counter)."""

    fence: int
    seen: int | None


class Keep(NamedTuple):
    """Kept out by an exclusive lease or the writers' mark, until ``writer`` (µs, by
    the margin; 0: none) or ``mark`` (µs; 0: none)."""

    writer: int
    mark: int


Plan = Lease | Create | Keep


def plan(state: ReaderState, token: str, *, end: int, now: int, cut: int) -> Plan:
    """The next write of an acquire of a shared lease ending at ``end``, from the item
    as last seen."""
    mine = (state.readers or {}).get(token)
    if mine is not None and mine > now:  # a retry after a lost reply: same fence
        return Lease(fresh=False, keep=state.keeps(end))
    writer, mark = state.writer(cut), state.mark if (state.mark or 0) >= now else None
    if writer is not None or mark is not None:
        return Keep(writer or 0, mark or 0)
    if state.readers is None:
        seed = state.fence if state.fence is not None else now
        return Create(seed + 1, state.fence)
    return Lease(keep=state.keeps(end))


# -- the requests ---------------------------------------------------------------------------


def _rend(how: Lease) -> tuple[str, str]:
    """The ``SET`` part and the condition that keep ``rend`` (and ``expires``) at or
    past ``:e``: raise them to it, or require them to be later already."""
    if how.keep:
        return "", "#re >= :e"
    return ", #re = :e, #x = :x", "(attribute_not_exists(#re) OR #re <= :e OR size(#rd) = :zero)"


def lease(key: str, token: str, end: int, *, now: int, cut: int, how: Lease) -> Request:
    """Take (``how.fresh``) or renew a shared lease ending at ``end``.

    Fresh: admits an item with a readers map, no live exclusive lease (by the margin),
    no live mark, and no live entry of ``token`` (its own run-out entry is replaced);
    bumps the key's fence counter into the entry, drops a lapsed mark and ``token``'s
    release record. Renew: admits only ``token``'s live entry (by its clock), whatever
    holds the key, and keeps its fence. Both return ``ALL_NEW`` (the fence, and the
    entries that ran out, for :func:`sweep`); on failure the old item, for :func:`plan`.
    """
    raise_rend, rend_ok = _rend(how)
    paths = {"#me": token}
    values: dict[str, Any] = {":e": N(end), ":now": N(now)}
    if not how.keep:
        values.update({":x": N(expires(end)), ":zero": N(0)})
    if not how.fresh:
        return update(
            key,
            "SET #rd.#me = :e" + raise_rend,
            f"#rd.#me > :now AND {rend_ok}",
            "#rd #re" + (" #x" if not how.keep else ""),
            values,
            paths=paths,
            ReturnValues="ALL_NEW",
            **_ALL_OLD,
        )
    values.update({":cut": N(cut), ":seed": N(now), ":one": N(1), ":ts": {"SS": [token]}})
    paths["#s"] = slot(token)
    return update(
        key,
        "SET #rd.#me = :e, #rf.#me = if_not_exists(#f, :seed) + :one, "
        "#f = if_not_exists(#f, :seed) + :one" + raise_rend + " REMOVE #m DELETE #rg.#s :ts",
        f"attribute_exists(#rd) AND {_FREE} "
        f"AND (attribute_not_exists(#rd.#me) OR #rd.#me <= :now) AND {rend_ok}",
        "#t #l #f #rd #rf #re #m #rg" + (" #x" if not how.keep else ""),
        values,
        paths=paths,
        ReturnValues="ALL_NEW",
        **_ALL_OLD,
    )


def create(key: str, token: str, end: int, *, now: int, cut: int, how: Create) -> Request:
    """The first reader of an item without a readers map (a new key, one whose item TTL
    deleted, or one written only by an earlier version): sets the maps with ``token``
    in them. Its fence is ``how.fence``, on the condition that the counter is still
    the one seen (so it is the counter's next value, as a bump would make it).
    Returns ``ALL_NEW``; on failure the old item, for :func:`plan`."""
    counter = "attribute_not_exists(#f)" if how.seen is None else "#f = :seen"
    values: dict[str, Any] = {
        ":rd": {"M": {token: N(end)}},
        ":rf": {"M": {token: N(how.fence)}},
        ":f": N(how.fence),
        ":e": N(end),
        ":x": N(expires(end)),
        ":empty": _EMPTY,
        ":now": N(now),
        ":cut": N(cut),
    }
    if how.seen is not None:
        values[":seen"] = N(how.seen)
    return update(
        key,
        "SET #rd = :rd, #rf = :rf, #rg = if_not_exists(#rg, :empty), #f = :f, #re = :e, "
        "#x = :x REMOVE #m",
        f"attribute_not_exists(#rd) AND {_FREE} AND {counter}",
        "#t #l #f #rd #rf #rg #re #m #x",
        values,
        ReturnValues="ALL_NEW",
        **_ALL_OLD,
    )


def release(key: str, token: str, now: int) -> Request:
    """Give back ``token``'s live shared lease (by its clock) and record it in its
    ``rgone`` slot. On failure the old item tells a retried release (its record is
    there, its entry is not) from a lease that ran out or was taken over."""
    return update(
        key,
        "REMOVE #rd.#me, #rf.#me SET #rg.#s = :ts",
        "#rd.#me > :now",
        "#rd #rf #rg",
        {":ts": {"SS": [token]}, ":now": N(now)},
        paths={"#me": token, "#s": slot(token)},
        **_ALL_OLD,
    )


def sweep(key: str, dead: list[tuple[str, int]]) -> Request:
    """Drop the entries of readers whose leases ran out (they crashed, or lost their
    release), each only if it is still the entry that was seen (a renewed one stays).
    ``rend`` stays: it only has to be an upper bound."""
    paths = {f"#o{i}": token for i, (token, _) in enumerate(dead)}
    return update(
        key,
        "REMOVE " + ", ".join(f"#rd.#o{i}, #rf.#o{i}" for i in range(len(dead))),
        " AND ".join(f"#rd.#o{i} = :e{i}" for i in range(len(dead))),
        "#rd #rf",
        {f":e{i}": N(end) for i, (_, end) in enumerate(dead)},
        paths=paths,
    )


def mark(key: str, until: int) -> Request:
    """A writer refused by readers: no new reader until ``until`` (µs). Raises the
    mark only (never lowers it), and only while readers are still there: a writer
    that got in meanwhile emptied the map, and a mark then would only hold readers
    back for nothing."""
    return update(
        key,
        "SET #m = :m",
        "(attribute_not_exists(#m) OR #m < :m) AND size(#rd) > :zero",
        "#m #rd",
        {":m": N(until), ":zero": N(0)},
    )


def readers(key: str) -> Request:
    """A strongly consistent read of the readers and their fences."""
    params = {
        "Key": lock_key(key),
        "ConsistentRead": True,
        "ProjectionExpression": "#rd, #rf",
        "ExpressionAttributeNames": {"#rd": "readers", "#rf": "rfences"},
    }
    return Request("get_item", params)


__all__ = [
    "MAX_DROP",
    "SLOTS",
    "Create",
    "Keep",
    "Lease",
    "Plan",
    "ReaderState",
    "create",
    "lease",
    "mark",
    "plan",
    "readers",
    "release",
    "slot",
    "sweep",
]
