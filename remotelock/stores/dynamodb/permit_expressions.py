"""The requests behind counted permits (``limit=N``), and the choice between them.

Conventions as in :mod:`remotelock.stores.dynamodb.expressions`. All permits of a key
live in one item (``pk = "permits:<key>"``), so that admitting a holder is one
conditional write that sees every other holder: ``lim`` (N, the limit its holders
use), ``fence`` (N, the last fencing token handed out), ``holders`` (M, token -> lease
end in µs), ``fences`` (M, token -> its fencing token), ``released`` (M, token -> when
it gave its permit back, the most recent few) and ``expires`` (the TTL attribute).

Every entry of ``holders`` counts against the limit, run out or not, so an admitting
write checks ``size(holders)`` and nothing else needs reading. Run-out entries (their
holders crashed) are dropped by the write that needs their room, on the condition that
each is still the entry that was seen, so a holder that renewed meanwhile is never
dropped. Which write to send is :func:`plan`'s decision, from the item as the last
refused write returned it (``ALL_OLD``): no extra read.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from ..._checks import MAX_TTL
from ...errors import LimitConflict
from .common import (
    PARTITION_KEY,
    PERMITS,
    RELEASED_MARGIN,
    Item,
    N,
    S,
    expires,
    micros,
    number,
    numbers,
)
from .expressions import Request

_NAMES: Final = {
    "#h": "holders",
    "#fs": "fences",
    "#f": "fence",
    "#lim": "lim",
    "#rel": "released",
    "#x": "expires",
}
_ALL_OLD: Final = {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
_HORIZON: Final = micros(MAX_TTL)

MAX_DROP: Final = 64
"""Run-out entries one write drops at most (each adds to the expressions' length)."""


def permit_key(key: str) -> dict[str, Any]:
    return {PARTITION_KEY: S(PERMITS + key)}


def _expires(now: int, lease_us: int) -> dict[str, str]:
    """The TTL of a permit item: past every holder's lease (none is longer than the
    lock layer's 7-day maximum), however the writes interleave."""
    return N(expires(now + max(lease_us, _HORIZON)))


class PermitState(NamedTuple):
    """A permit item, decoded."""

    limit: int
    holders: dict[str, int]
    fences: dict[str, int]
    released: dict[str, int]

    @classmethod
    def of(cls, item: Item) -> PermitState | None:
        if "holders" not in item:
            return None
        return cls(
            number(item, "lim") or 0,
            numbers(item, "holders"),
            numbers(item, "fences"),
            numbers(item, "released"),
        )

    def live(self, cut: int, but: str | None = None) -> dict[str, int]:
        """Holders (other than ``but``) whose lease ended no earlier than ``cut``."""
        return {t: end for t, end in self.holders.items() if t != but and end >= cut}


# -- what to send ---------------------------------------------------------------------------


class Admit(NamedTuple):
    """Take a permit, dropping ``drop`` (token, lease end) and replacing ``mine``
    (``token``'s own run-out lease end; ``None``: it holds no entry). With
    ``admit=False`` only drop (too many to drop in the same write)."""

    drop: tuple[tuple[str, int], ...] = ()
    mine: int | None = None
    admit: bool = True


class Full(NamedTuple):
    """Every permit is held; the first one runs out at ``ends`` (µs)."""

    ends: int


RENEW: Final = "renew"
CREATE: Final = "create"
Plan = Admit | Full | str


def plan(
    state: PermitState | None, key: str, token: str, limit: int, *, now: int, cut: int
) -> Plan:
    """The next write for an acquire, from the item as last seen (``None``: no item).

    :raises LimitConflict: live holders use another limit.
    """
    if state is None:
        return CREATE
    mine = state.holders.get(token)
    if mine is not None and mine > now:
        return RENEW
    live = state.live(cut, but=token)
    if live and state.limit != limit:
        raise LimitConflict(key, state.limit, limit)
    if len(live) >= limit:
        return Full(min(live.values()))
    dead = sorted(
        ((t, end) for t, end in state.holders.items() if t != token and t not in live),
        key=lambda entry: entry[1],
    )
    if len(dead) > MAX_DROP:
        return Admit(tuple(dead[:MAX_DROP]), admit=False)
    return Admit(tuple(dead), mine)


# -- the requests ---------------------------------------------------------------------------


def _update(
    key: str, update: str, condition: str, names: dict[str, str], values: dict[str, Any],
    **more: Any,
) -> Request:  # fmt: skip
    params: dict[str, Any] = {
        "Key": permit_key(key),
        "UpdateExpression": update,
        "ExpressionAttributeNames": names,
        **more,
    }
    if condition:
        params["ConditionExpression"] = condition
    if values:
        params["ExpressionAttributeValues"] = values
    return Request("update_item", params)


def _names(*short: str, me: str | None = None, others: tuple[str, ...] = ()) -> dict[str, str]:
    names = {name: _NAMES[name] for name in short}
    if me is not None:
        names["#me"] = me
    names.update({f"#o{index}": token for index, token in enumerate(others)})
    return names


def admit(key: str, token: str, lease_us: int, limit: int, *, now: int, how: Admit) -> Request:
    """Take a permit if fewer than ``limit`` entries would remain with ours added, and
    the holders left use ``limit`` (or none are left). Returns ``UPDATED_NEW`` (the new
    fence); on failure the old item, for :func:`plan`."""
    drops = range(len(how.drop))
    removed = "".join(f", #h.#o{i}, #fs.#o{i}" for i in drops)
    kept = "".join(f" AND #h.#o{i} = :e{i}" for i in drops)
    values = {f":e{i}": N(end) for i, (_, end) in enumerate(how.drop)}
    others = tuple(t for t, _ in how.drop)
    if not how.admit:
        names = _names("#h", "#fs", others=others)
        return _update(key, "REMOVE " + removed[2:], kept[5:], names, values)
    names = _names("#h", "#fs", me=token, others=others)
    own = 0 if how.mine is None else 1
    mine = " AND attribute_not_exists(#h.#me)" if how.mine is None else " AND #h.#me = :mine"
    if how.mine is not None:
        values[":mine"] = N(how.mine)
    end = now + lease_us
    values.update({
        ":l": N(end), ":one": N(1), ":lim": N(limit), ":x": _expires(now, lease_us),
        ":cap": N(limit + len(how.drop) + own), ":k": N(len(how.drop) + own),
    })  # fmt: skip
    return _update(
        key,
        "SET #h.#me = :l, #fs.#me = #f + :one, #f = #f + :one, #lim = :lim, #x = :x "
        "REMOVE #rel.#me" + removed,
        "attribute_exists(#h) AND size(#h) < :cap AND (#lim = :lim OR size(#h) <= :k)"
        + mine
        + kept,
        {**names, **_names("#f", "#lim", "#rel", "#x")},
        values,
        ReturnValues="UPDATED_NEW",
        **_ALL_OLD,
    )


def create(key: str, token: str, lease_us: int, limit: int, now: int) -> Request:
    """The first permit of a key (or the first since TTL deleted its item): the fence
    is seeded from the clock. Admits only a missing item; on failure the old item."""
    fence = now + 1
    return _update(
        key,
        "SET #h = :h, #fs = :fs, #rel = :none, #f = :f, #lim = :lim, #x = :x",
        "attribute_not_exists(#h)",
        _names("#h", "#fs", "#rel", "#f", "#lim", "#x"),
        {
            ":h": {"M": {token: N(now + lease_us)}},
            ":fs": {"M": {token: N(fence)}},
            ":none": {"M": {}},
            ":f": N(fence),
            ":lim": N(limit),
            ":x": _expires(now, lease_us),
        },
        **_ALL_OLD,
    )


def renew(key: str, token: str, lease_us: int, now: int) -> Request:
    """A fresh lease for ``token``'s unexpired permit (same fence); ``ALL_NEW``, or on
    failure the old item. Also the extend step, which ignores what comes back."""
    return _update(
        key,
        "SET #h.#me = :l, #x = :x",
        "#h.#me > :now",
        _names("#h", "#x", me=token),
        {":l": N(now + lease_us), ":x": _expires(now, lease_us), ":now": N(now)},
        ReturnValues="ALL_NEW",
        **_ALL_OLD,
    )


def release(key: str, token: str, now: int) -> Request:
    """Give back ``token``'s unexpired permit and note it in ``released``. Returns
    ``ALL_OLD`` either way: on success to see how long ``released`` grew, on failure
    to tell a retried release from a lost permit."""
    return _update(
        key,
        "SET #rel.#me = :now REMOVE #h.#me, #fs.#me",
        "#h.#me > :now",
        _names("#h", "#fs", "#rel", me=token),
        {":now": N(now)},
        ReturnValues="ALL_OLD",
        **_ALL_OLD,
    )


def trim(key: str, tokens: list[str]) -> Request:
    """Forget the releases of ``tokens`` (the oldest, once ``released`` grew long)."""
    removed = ", ".join(f"#rel.#o{i}" for i in range(len(tokens)))
    names = _names("#rel", others=tuple(tokens))
    return _update(key, "REMOVE " + removed, "attribute_exists(#rel)", names, {})


def to_trim(released: dict[str, int], limit: int) -> list[str]:
    """After a release: the oldest releasers to forget, once more than ``limit`` +
    :data:`RELEASED_MARGIN` are remembered (down to ``limit``: one trim per margin's
    worth of releases, never one per release)."""
    if len(released) <= limit + RELEASED_MARGIN:
        return []
    oldest = sorted(released, key=lambda token: released[token])
    return oldest[: len(released) - limit][:MAX_DROP]


def state(key: str) -> Request:
    """A strongly consistent read of the whole permit item."""
    params = {"Key": permit_key(key), "ConsistentRead": True}
    return Request("get_item", params)


__all__ = [
    "CREATE",
    "MAX_DROP",
    "RENEW",
    "Admit",
    "Full",
    "PermitState",
    "Plan",
    "admit",
    "create",
    "permit_key",
    "plan",
    "release",
    "renew",
    "state",
    "to_trim",
    "trim",
]
