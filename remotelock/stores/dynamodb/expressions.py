"""The requests behind every step of the DynamoDB store: one conditional write each.

As :mod:`remotelock.stores.postgres.sql` holds the PostgreSQL store's statements, this
module holds the DynamoDB store's requests, built without I/O. Each builder returns a
:class:`Request` (the client method and its parameters, less ``TableName``), and its
docstring says what the condition admits and what comes back.

Lock item (``pk = "lock:<key>"``): ``token`` (S, absent once released), ``lease`` (N,
the lease end in microseconds of the writer's wall clock), ``fence`` (N, the last
fencing token handed out, to exclusive and shared holders alike), ``released`` (SS, the
token whose release freed it last) and ``expires`` (N, the TTL attribute, in epoch
seconds). Shared (reader) leases live in the same item, so that the exclusive take's
condition sees them: ``readers``, ``rfences``, ``rend``, ``mark`` and ``rgone`` (see
:mod:`remotelock.stores.dynamodb.reader_expressions`).

Times are microseconds of this client's clock (``now``); ``cut`` is ``now`` less the
clock-skew margin: a lease counts as run out for *other* tokens only once it ended
more than the margin ago, while a holder counts its own lease by its own clock.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from .common import LOCK, PARTITION_KEY, N, S, expires


class Request(NamedTuple):
    """One DynamoDB request: the low-level client's method name and its parameters."""

    operation: str
    params: dict[str, Any]


_NAMES: Final = {
    "#t": "token",
    "#l": "lease",
    "#f": "fence",
    "#r": "released",
    "#x": "expires",
    "#pk": PARTITION_KEY,
    "#rd": "readers",
    "#rf": "rfences",
    "#re": "rend",
    "#m": "mark",
    "#rg": "rgone",
}
_EMPTY: Final[dict[str, Any]] = {"M": {}}
_ALL_OLD: Final[dict[str, Any]] = {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"}


def lock_key(key: str) -> dict[str, Any]:
    return {PARTITION_KEY: S(LOCK + key)}


def update(
    key: str,
    expression: str,
    condition: str,
    names: str,
    values: dict[str, Any],
    *,
    paths: dict[str, str] | None = None,
    **more: Any,
) -> Request:
    """An ``UpdateItem`` of ``key``'s lock item. ``names`` lists the placeholders of
    the item's attributes used (``"#t #l"``); ``paths`` adds placeholders of map keys
    (tokens, slots), which are never written into an expression itself."""
    params: dict[str, Any] = {
        "Key": lock_key(key),
        "UpdateExpression": expression,
        "ExpressionAttributeNames": {name: _NAMES[name] for name in names.split()},
        **more,
    }
    if condition:
        params["ConditionExpression"] = condition
    if paths:
        params["ExpressionAttributeNames"].update(paths)
    if values:  # DynamoDB refuses an empty map here
        params["ExpressionAttributeValues"] = values
    return Request("update_item", params)


def take(key: str, token: str, lease_us: int, now: int, cut: int) -> Request:
    """Acquire: admits a missing or released item, a lease that ran out more than the
    skew margin ago, or ``token``'s own lease that ran out by its clock; and only while
    no shared lease may be live: no reader entry, or ``rend`` (the bound of every
    reader's lease end) passed more than the margin ago. Bumps the fence (seeded from
    the clock if the item is new, or was deleted by TTL), takes ``token`` off the
    ``released`` record, empties the readers' maps (what is left in them ran out) and
    drops ``rend`` and the writers' ``mark``. Returns ``UPDATED_NEW`` (the new fence);
    on failure the old item, whose holder, readers and lease ends the waiter then uses.

    The maps are emptied rather than removed so that the next reader's request finds
    them (a reader cannot add a key to a map that does not exist); ``rgone`` is kept."""
    end = now + lease_us
    return update(
        key,
        "SET #t = :t, #l = :l, #f = if_not_exists(#f, :seed) + :one, #x = :x, "
        "#rd = :empty, #rf = :empty, #rg = if_not_exists(#rg, :empty) "
        "REMOVE #re, #m DELETE #r :ts",
        "(attribute_not_exists(#t) OR #l < :cut OR (#t = :t AND #l <= :now)) "
        "AND (attribute_not_exists(#rd) OR size(#rd) = :zero OR #re < :cut)",
        "#t #l #f #x #r #rd #rf #re #m #rg",
        {
            ":t": S(token),
            ":l": N(end),
            ":seed": N(now),
            ":one": N(1),
            ":zero": N(0),
            ":x": N(expires(end)),
            ":ts": {"SS": [token]},
            ":cut": N(cut),
            ":now": N(now),
            ":empty": _EMPTY,
        },
        ReturnValues="UPDATED_NEW",
        **_ALL_OLD,
    )


def renew(key: str, token: str, lease_us: int, now: int) -> Request:
    """Re-acquire by the holder (a retry after a lost reply): a fresh lease, the same
    fence. Admits only ``token``'s unexpired lease; returns ``ALL_NEW``."""
    end = now + lease_us
    return update(
        key,
        "SET #l = :l, #x = :x",
        "#t = :t AND #l > :now",
        "#t #l #x",
        {":t": S(token), ":l": N(end), ":x": N(expires(end)), ":now": N(now)},
        ReturnValues="ALL_NEW",
    )


def release(key: str, token: str, now: int) -> Request:
    """Release: admits ``token``'s unexpired lease; clears the holder and records
    ``token`` as the releaser. On failure the old item tells a retried release (its
    ``released`` names ``token``) from a lost lease."""
    return update(
        key,
        "SET #r = :ts, #x = :x REMOVE #t",
        "#t = :t AND #l > :now",
        "#t #l #r #x",
        {":t": S(token), ":ts": {"SS": [token]}, ":x": N(expires(now)), ":now": N(now)},
        **_ALL_OLD,
    )


def extend(key: str, token: str, lease_us: int, now: int) -> Request:
    """Extend: admits ``token``'s unexpired lease; moves its end (and the TTL)."""
    end = now + lease_us
    return update(
        key,
        "SET #l = :l, #x = :x",
        "#t = :t AND #l > :now",
        "#t #l #x",
        {":t": S(token), ":l": N(end), ":x": N(expires(end)), ":now": N(now)},
    )


def force_release(key: str) -> Request:
    """Clear the holder whoever it is, and every reader and the writers' mark (admits
    any existing item); returns ``ALL_OLD`` (was the exclusive lease running?)."""
    return update(
        key,
        "SET #rd = :empty, #rf = :empty, #rg = if_not_exists(#rg, :empty) REMOVE #t, #re, #m",
        "attribute_exists(#pk)",
        "#pk #t #rd #rf #rg #re #m",
        {":empty": _EMPTY},
        ReturnValues="ALL_OLD",
    )


def holder(key: str) -> Request:
    """A strongly consistent read of what keeps others out: the holder and its lease
    end, the readers' lease ends and the writers' mark."""
    params = {
        "Key": lock_key(key),
        "ConsistentRead": True,
        "ProjectionExpression": "#t, #l, #rd, #m",
        "ExpressionAttributeNames": {name: _NAMES[name] for name in ("#t", "#l", "#rd", "#m")},
    }
    return Request("get_item", params)


def scan(prefix: str, start: dict[str, Any] | None) -> Request:
    """One page of the held locks whose key starts with ``prefix`` (admin only)."""
    params: dict[str, Any] = {
        "ConsistentRead": True,
        "FilterExpression": "begins_with(#pk, :p) AND attribute_exists(#t)",
        "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#t": "token"},
        "ExpressionAttributeValues": {":p": S(LOCK + prefix)},
    }
    if start is not None:
        params["ExclusiveStartKey"] = start
    return Request("scan", params)


__all__ = [
    "Request",
    "extend",
    "force_release",
    "holder",
    "lock_key",
    "release",
    "renew",
    "scan",
    "take",
    "update",
]
