"""Kept results for :class:`~remotelock.stores.dynamodb.store.DynamoDBStore` (a mixin).

Result item (``pk = "result:<key>"``): ``data`` (B, the value), ``until`` (N, when it
runs out, in microseconds of the writer's wall clock) and ``expires`` (N, the TTL
attribute, a second later). A put is one ``PutItem``, a read one strongly consistent
``GetItem`` that answers ``None`` once ``until`` has passed by the reader's clock (so,
as for leases, clients' clocks must roughly agree); DynamoDB's TTL deletes the item
within a few days after that, so nothing stays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .common import PARTITION_KEY, TTL_ATTRIBUTE, N, S, micros, now_us, number
from .expressions import Request

RESULT: Final = "result:"
MAX_RESULT_BYTES: Final = 380_000
"""Longest kept result: a DynamoDB item holds at most 400 KB, names and key included."""


class DynamoDBResults:
    """The :class:`~remotelock.stores.base.ResultStore` methods of DynamoDBStore."""

    max_result_bytes = MAX_RESULT_BYTES

    if TYPE_CHECKING:  # provided by DynamoDBStore
        from .calls import Caller

        _call: Caller

    def put_result(self, key: str, data: bytes, ttl: float) -> None:
        """Keep ``data`` as ``key``'s value for ``ttl`` seconds (one ``PutItem``)."""
        end = now_us() + micros(ttl)
        item = {
            PARTITION_KEY: S(RESULT + key),
            "data": {"B": bytes(data)},
            "until": N(end),
            TTL_ATTRIBUTE: N(end // 1_000_000 + 1),
        }
        self._call("put_result", key, Request("put_item", {"Item": item}))

    def get_result(self, key: str) -> bytes | None:
        """``key``'s value, or ``None`` if it has none (or it ran out)."""
        params = {"Key": {PARTITION_KEY: S(RESULT + key)}, "ConsistentRead": True}
        item = self._call("get_result", key, Request("get_item", params)).get("Item") or {}
        until = number(item, "until")
        if until is None or until <= now_us() or "data" not in item:
            return None
        return bytes(item["data"]["B"])


__all__ = ["MAX_RESULT_BYTES", "RESULT", "DynamoDBResults"]
