"""The requests behind every step of the DynamoDB store: one conditional write each.

As :mod:`remotelock.stores.postgres.sql` holds the PostgreSQL store's statements, this
module holds the DynamoDB store's requests, built without I/O. Each builder returns a
:class:`Request` (the client method and its parameters, less ``TableName``), and its
docstring says what the condition admits and what comes back.

Lock item (``pk = "lock:<key>"``): ``token`` (S, absent once released), ``lease`` (N,
the lease end in microseconds of the writer's wall clock), ``fence`` (N, the last
fencing token handed out), ``released`` (SS, the token whose release freed it last)
and ``expires`` (N, the TTL attribute, in epoch seconds).

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
}
_ALL_OLD: Final = {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"}


def lock_key(key: str) -> dict[str, Any]:
    return {PARTITION_KEY: S(LOCK + key)}


def _update(
    key: str, update: str, condition: str, names: str, values: dict[str, Any], **more: Any
) -> Request:
    params: dict[str, Any] = {
        "Key": lock_key(key),
        "UpdateExpression": update,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {name: _NAMES[name] for name in names.split()},
        **more,
    }
    if values:  # DynamoDB refuses an empty map here
        params["ExpressionAttributeValues"] = values
    return Request("update_item", params)


def take(key: str, token: str, lease_us: int, now: int, cut: int) -> Request:
    """Acquire: admits a missing or released item, a lease that ran out more than the
    skew margin ago, or ``token``'s own lease that ran out by its clock. Bumps the
    fence (seeded from the clock if the item is new, or was deleted by TTL), takes
    ``token`` off the ``released`` record. Returns ``UPDATED_NEW`` (the new fence);
    on failure the old item, whose holder and lease end the waiter then uses."""
    end = now + lease_us
    return _update(
        key,
        "SET #t = :t, #l = :l, #f = if_not_exists(#f, :seed) + :one, #x = :x DELETE #r :ts",
        "attribute_not_exists(#t) OR #l < :cut OR (#t = :t AND #l <= :now)",
        "#t #l #f #x #r",
        {
            ":t": S(token),
            ":l": N(end),
            ":seed": N(now),
            ":one": N(1),
            ":x": N(expires(end)),
            ":ts": {"SS": [token]},
            ":cut": N(cut),
            ":now": N(now),
        },
        ReturnValues="UPDATED_NEW",
        **_ALL_OLD,
    )


def renew(key: str, token: str, lease_us: int, now: int) -> Request:
    """Re-acquire by the holder (a retry after a lost reply): a fresh lease, the same
    fence. Admits only ``token``'s unexpired lease; returns ``ALL_NEW``."""
    end = now + lease_us
    return _update(
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
    return _update(
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
    return _update(
        key,
        "SET #l = :l, #x = :x",
        "#t = :t AND #l > :now",
        "#t #l #x",
        {":t": S(token), ":l": N(end), ":x": N(expires(end)), ":now": N(now)},
    )


def force_release(key: str) -> Request:
    """Clear the holder whoever it is; returns ``ALL_OLD`` (was its lease running?)."""
    return _update(key, "REMOVE #t", "attribute_exists(#t)", "#t", {}, ReturnValues="ALL_OLD")


def holder(key: str) -> Request:
    """A strongly consistent read of the holder and its lease end."""
    params = {
        "Key": lock_key(key),
        "ConsistentRead": True,
        "ProjectionExpression": "#t, #l",
        "ExpressionAttributeNames": {"#t": "token", "#l": "lease"},
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
]
