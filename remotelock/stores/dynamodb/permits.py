"""Counted permits (``limit=N``) for the DynamoDB store: the mixin of DynamoDBStore.

All permits of a key live in one item, so taking one is one conditional write that
counts every holder (see :mod:`remotelock.stores.dynamodb.permit_expressions`). The
first write assumes the item exists and has room, which is the usual case; when its
condition fails, the item as it was (``ALL_OLD``) says what to send instead (create
the item, drop run-out holders, renew the caller's own permit) or that every permit
is taken, and when the first one runs out, so a waiter needs no read of its own. A
few such rounds at most: racing acquirers each learn the latest item from their
refusal, so ``limit`` of them get in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from ..listing import PermitInfo
from . import permit_expressions as p
from .common import (
    PARTITION_KEY,
    PERMITS,
    Busy,
    Refused,
    micros,
    now_us,
    number,
    numbers,
    text,
    until,
)
from .expressions import Request

if TYPE_CHECKING:
    from .calls import Caller
    from .common import Refusals

ROUNDS: Final = 4
"""Writes one acquire sends at most before it reports the permits busy."""


class DynamoDBPermits:
    """The counted permits of DynamoDBStore (:class:`~remotelock.stores.base.PermitStore`)."""

    if TYPE_CHECKING:  # provided by DynamoDBStore
        _call: Caller
        _refusals: Refusals
        _skew_us: int

        def _wait_on(
            self, slot: str, key: str, timeout: float, look: Callable[[], Busy | None]
        ) -> None: ...

    def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """Take one of ``limit`` permits of ``key`` (see :class:`PermitStore`).

        :raises LimitConflict: its live holders use another limit.
        """
        now, lease = now_us(), micros(ttl)
        how: p.Plan = p.Admit()
        for _ in range(ROUNDS):
            try:
                request = self._request(key, token, lease, limit, now=now, how=how)
                reply = self._call("acquire_permit", key, request)
            except Refused as refused:
                state = p.PermitState.of(refused.item)
                how = p.plan(state, key, token, limit, now=now, cut=now - self._skew_us)
                if isinstance(how, p.Full):
                    self._refusals.note(PERMITS + key, Busy(until(how.ends, self._skew_us)))
                    return None
                continue
            attributes = reply.get("Attributes") or {}
            if how == p.CREATE:
                return now + 1
            if how == p.RENEW:
                return p.PermitState.of(attributes).fences[token]  # type: ignore[union-attr]
            if isinstance(how, p.Admit) and how.admit:
                return number(attributes, "fence")
            how = p.Admit()  # run-out holders dropped: now take a permit
        return None

    @staticmethod
    def _request(key: str, token: str, lease: int, limit: int, *, now: int, how: p.Plan) -> Any:
        if how == p.CREATE:
            return p.create(key, token, lease, limit, now)
        if how == p.RENEW:
            return p.renew(key, token, lease, now)
        assert isinstance(how, p.Admit)
        return p.admit(key, token, lease, limit, now=now, how=how)

    def release_permit(self, key: str, token: str) -> bool:
        """Give back ``token``'s permit; ``True`` too for a repeated release by a token
        that gave its permit back recently (a retry after a lost reply)."""
        now = now_us()
        try:
            reply = self._call("release_permit", key, p.release(key, token, now))
        except Refused as refused:
            state = p.PermitState.of(refused.item)
            return state is not None and token in state.released and token not in state.holders
        old = p.PermitState.of(reply.get("Attributes") or {})
        stale = [] if old is None else p.to_trim({**old.released, token: now}, old.limit)
        if stale:
            with contextlib.suppress(Refused):  # the item is gone: nothing to trim
                self._call("release_permit", key, p.trim(key, stale))
        return True

    def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s permit to ``ttl`` seconds if it still holds it."""
        try:
            self._call("extend_permit", key, p.renew(key, token, micros(ttl), now_us()))
        except Refused:
            return False
        return True

    def permit_holders(self, key: str) -> list[str]:
        """The tokens holding a permit of ``key`` now, oldest fence first."""
        state = self._permits(key, "permit_holders")
        if state is None:
            return []
        live = state.live(now_us() - self._skew_us)
        return sorted(live, key=lambda token: state.fences.get(token, 0))

    def wait_permit(self, key: str, timeout: float) -> None:
        """Poll until a permit of ``key`` looks free, the first one runs out (plus the
        skew margin), or ``timeout``."""
        self._wait_on(PERMITS + key, key, timeout, lambda: self._permits_busy(key))

    def _permits(self, key: str, step: str) -> p.PermitState | None:
        return p.PermitState.of(self._call(step, key, p.state(key)).get("Item") or {})

    def _permits_busy(self, key: str) -> Busy | None:
        state = self._permits(key, "wait_permit")
        if state is None:
            return None
        live = state.live(now_us() - self._skew_us)
        if len(live) < state.limit:
            return None
        return Busy(until(min(live.values()), self._skew_us))

    def iter_permits(self, prefix: str = "") -> Iterator[PermitInfo]:
        """Every unexpired permit holder of the keys starting with ``prefix`` (a Scan of
        the table: for operators, not for hot paths)."""
        found: list[PermitInfo] = []
        start: dict[str, Any] | None = None
        now = now_us()
        while True:
            params: dict[str, Any] = {
                "ConsistentRead": True,
                "FilterExpression": "begins_with(#pk, :p)",
                "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
                "ExpressionAttributeValues": {":p": {"S": PERMITS + prefix}},
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            page = self._call("iter_permits", prefix, Request("scan", params))
            for item in page.get("Items", []):
                key = (text(item, PARTITION_KEY) or "")[len(PERMITS) :]
                limit, fences = number(item, "lim") or 0, numbers(item, "fences")
                for token, end in numbers(item, "holders").items():
                    if end > now:
                        info = PermitInfo(key, limit, token, fences.get(token), (end - now) / 1e6)
                        found.append(info)
            start = page.get("LastEvaluatedKey")
            if not start:
                return iter(sorted(found, key=lambda i: (i.key, i.fencing_token or 0)))


__all__ = ["ROUNDS", "DynamoDBPermits"]
