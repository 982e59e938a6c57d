"""Shared (reader) locks for :class:`~remotelock.stores.dynamodb.store.DynamoDBStore` (a mixin).

The rules are :mod:`remotelock.stores.readers`'; the requests are in
:mod:`remotelock.stores.dynamodb.reader_expressions`. Readers live in the key's lock
item, so every step is one conditional ``UpdateItem`` in the common case: taking,
renewing and giving back a shared lease, and the exclusive take, whose condition sees
the readers (through ``rend``, the bound of their lease ends). What is not common:

- A lease end earlier than another reader's (``rend`` is later): the write is refused
  and sent again leaving ``rend`` as it is (2 writes).
- The first reader of an item without a readers map (a new key; an item made by an
  earlier version): refused, then :func:`~.reader_expressions.create` (2 writes).
- A writer refused by live readers sends a second write, the mark (no new reader
  until the readers' last lease end plus the skew margin plus
  :data:`~remotelock.stores.readers.WRITER_GRACE`): 2 writes, but only when the mark
  must move (the first refusal, or readers that renewed since), so a writer that
  waits out the same readers pays 1 write per attempt after the first.
- Entries of readers that crashed: dropped by one more write from whichever step
  sees them (a writer refused only because of them, or a reader's write, whose
  ``ALL_NEW`` answer lists them at no extra cost), so a key only readers use never
  fills its item.

DynamoDB cannot push: ``wait_shared`` polls like ``wait``, bounded by the exclusive
lease (plus the margin) or the mark that keeps readers out, and the exclusive ``wait``
counts live readers as holders.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..readers import WRITER_GRACE
from . import reader_expressions as r
from .common import LOCK, Busy, Item, Refused, micros, now_us, until

if TYPE_CHECKING:
    from .calls import Caller
    from .common import Refusals

SHARED: Final = "shared:"
"""The slot of a refused shared acquire in the store's record of refusals."""

ROUNDS: Final = 4
"""Writes one step sends at most before it reports the key busy (races only)."""


class DynamoDBReaders:
    """The :class:`~remotelock.stores.readers.SharedStore` methods of DynamoDBStore, and
    the parts of the exclusive steps that must see the readers."""

    if TYPE_CHECKING:  # provided by DynamoDBStore
        _call: Caller
        _refusals: Refusals
        _skew_us: int

        def _wait_on(
            self, slot: str, key: str, timeout: float, look: Callable[[], Busy | None]
        ) -> None: ...
        def _read(self, key: str) -> dict[str, Any]: ...

    # -- the SharedStore protocol -------------------------------------------------------

    def acquire_shared(self, key: str, token: str, ttl: float) -> int | None:
        """Take a shared lease of ``key`` (see :class:`~remotelock.stores.readers.SharedStore`):
        one conditional write while the item has readers' maps and ``rend`` needs no
        care; the refused write's old item says what to send instead, or that an
        exclusive lease or the writers' mark keeps readers out (and until when)."""
        now = now_us()
        cut, end = now - self._skew_us, now + micros(ttl)
        how: r.Plan = r.Lease()
        for _ in range(ROUNDS):
            if isinstance(how, r.Create):
                request = r.create(key, token, end, now=now, cut=cut, how=how)
            else:
                assert isinstance(how, r.Lease)
                request = r.lease(key, token, end, now=now, cut=cut, how=how)
            try:
                reply = self._call("acquire_shared", key, request)
            except Refused as refused:
                how = r.plan(r.ReaderState.of(refused.item), token, end=end, now=now, cut=cut)
                if isinstance(how, r.Keep):
                    self._refusals.note(SHARED + key, self._kept_until(how.writer, how.mark))
                    return None
                continue
            state = r.ReaderState.of(reply.get("Attributes") or {})
            self._sweep(key, state, cut)
            return state.fences.get(token)
        return None

    def release_shared(self, key: str, token: str) -> bool:
        """Give back ``token``'s shared lease; ``True`` too for a repeated release by a
        token that just gave its lease back (a retry after a lost reply). DynamoDB
        cannot push, so waiting writers notice by polling."""
        try:
            self._call("release_shared", key, r.release(key, token, now_us()))
        except Refused as refused:
            state = r.ReaderState.of(refused.item)
            end = (state.readers or {}).get(token)
            if end is None:
                return token in state.gone.get(r.slot(token), set())
            # Its lease ran out (by its clock): report the loss, and drop the entry
            # now rather than leave it to the next step that sees it.
            with contextlib.suppress(Refused):
                self._call("release_shared", key, r.sweep(key, [(token, end)]))
            return False
        return True

    def extend_shared(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s shared lease to ``ttl`` seconds if it still holds it (by
        its own clock)."""
        now = now_us()
        end = now + micros(ttl)
        how = r.Lease(fresh=False)
        for _ in range(2):  # the second only if rend had to be left as it is (or not)
            try:
                request = r.lease(key, token, end, now=now, cut=now - self._skew_us, how=how)
                reply = self._call("extend_shared", key, request)
            except Refused as refused:
                state = r.ReaderState.of(refused.item)
                mine = (state.readers or {}).get(token)
                if mine is None or mine <= now or state.keeps(end) == how.keep:
                    return False
                how = r.Lease(fresh=False, keep=state.keeps(end))
                continue
            self._sweep(key, r.ReaderState.of(reply.get("Attributes") or {}), now - self._skew_us)
            return True
        return False

    def shared_holders(self, key: str) -> list[str]:
        """The tokens holding a shared lease of ``key`` now (until their lease ended
        more than ``skew`` ago), oldest fence first."""
        item = self._call("shared_holders", key, r.readers(key)).get("Item") or {}
        state = r.ReaderState.of(item)
        live = state.live(now_us() - self._skew_us)
        return sorted(live, key=lambda token: state.fences.get(token, 0))

    def wait_shared(self, key: str, timeout: float) -> None:
        """Poll until a reader may enter ``key`` (the exclusive lease was released or ran
        out, plus ``skew``; the writers' mark lapsed), or ``timeout``."""
        self._wait_on(SHARED + key, key, timeout, lambda: self._shared_busy(self._read(key)))

    # -- what the exclusive steps need ------------------------------------------------

    def _refused_by_readers(self, key: str, token: str, item: Item, now: int) -> bool:
        """After the exclusive take was refused (``item``: the item as it was), and not
        for ``token``'s own live lease: note until when the key is busy, and mark a
        writer refused by live readers. ``True``: only entries of readers whose leases
        ran out refused it (``rend`` was later); they were dropped, so try again."""
        cut = now - self._skew_us
        state = r.ReaderState.of(item)
        if state.holder not in (None, token) and state.lease >= cut:  # another writer
            self._refusals.note(LOCK + key, Busy(until(state.lease, self._skew_us)))
            return False
        live = state.live(cut)
        if live:
            last = max(live.values())
            # The writer may take the key only skew after the readers' leases end: its
            # grace counts from then.
            mark = last + self._skew_us + micros(WRITER_GRACE)
            if (state.mark or 0) < mark:
                with contextlib.suppress(Refused):  # a writer got in meanwhile
                    self._call("acquire", key, r.mark(key, mark))
            self._refusals.note(LOCK + key, Busy(until(last, self._skew_us)))
            return False
        dead = state.dead(cut)
        if dead:
            with contextlib.suppress(Refused):  # changed meanwhile: the retry will tell
                self._call("acquire", key, r.sweep(key, dead))
            return True
        return False

    def _sweep(self, key: str, state: r.ReaderState, cut: int) -> None:
        """Drop the entries of readers whose leases ran out, if ``state`` shows any."""
        dead = state.dead(cut)
        if dead:
            with contextlib.suppress(Refused):  # another step dropped them, or one renewed
                self._call("sweep", key, r.sweep(key, dead))

    def _lock_busy(self, item: Item) -> Busy | None:
        """What a waiting writer waits for: the exclusive lease or the last live shared
        lease (plus ``skew``); ``None`` if neither is live."""
        cut = now_us() - self._skew_us
        state = r.ReaderState.of(item)
        ends = list(state.live(cut).values())
        if state.writer(cut) is not None:
            ends.append(state.lease)
        return Busy(until(max(ends), self._skew_us)) if ends else None

    def _shared_busy(self, item: Item) -> Busy | None:
        """What a waiting reader waits for: the exclusive lease (plus ``skew``) or the
        writers' mark; ``None`` if neither keeps readers out."""
        now = now_us()
        state = r.ReaderState.of(item)
        mark = state.mark or 0
        if mark < now:  # lapsed: readers may enter
            mark = 0
        writer = state.writer(now - self._skew_us) or 0
        return self._kept_until(writer, mark) if writer or mark else None

    def _kept_until(self, writer: int, mark: int) -> Busy:
        """When a reader kept out by an exclusive lease ending at ``writer`` and a mark
        lapsing at ``mark`` (µs; 0: none) may enter."""
        ends = [until(mark, 0)] if mark else []
        if writer:
            ends.append(until(writer, self._skew_us))
        return Busy(max(ends))


__all__ = ["ROUNDS", "SHARED", "DynamoDBReaders"]
