"""SharedContract: the rules of shared (reader) locks beside exclusive ones."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from ..stores.base import CROSS_HOST, EXPIRY, NOTIFY, TOKEN_CHECKED, QueuedStore, Store
from ..stores.readers import WRITER_GRACE, SharedStore
from .contract import _LATE, _LONG_WAIT, _token, median_overrun, needs, race, woken_by

_BRIEF = 1.0
"""A reader's lease that runs out soon, yet still holds at the test's next step on a slow
store (DynamoDB Local on a loaded machine took over 0.3 s for one)."""


class SharedContract:
    """The rules of :class:`~remotelock.stores.readers.SharedStore`.

    Runs with the ``store`` fixture; skipped for stores without shared locks.
    """

    @pytest.fixture
    def key(self) -> str:
        return f"shared:{uuid.uuid4().hex}:a key with spaces/ünïcode"

    @pytest.fixture
    def shared(self, store: Store) -> Any:
        if not isinstance(store, SharedStore):
            pytest.skip(f"{store!r} has no shared locks")
        return store

    def test_readers_hold_together(self, shared: Any, key: str) -> None:
        tokens = [_token() for _ in range(3)]
        fences = [shared.acquire_shared(key, token, 10) for token in tokens]
        assert all(isinstance(fence, int) and not isinstance(fence, bool) for fence in fences)
        assert sorted(shared.shared_holders(key)) == sorted(tokens)
        assert shared.owner(key) is None  # owner() names an exclusive holder only

    def test_a_reader_excludes_a_writer(self, shared: Any, key: str) -> None:
        reader, writer = _token(), _token()
        assert shared.acquire_shared(key, reader, 10) is not None
        assert shared.acquire(key, writer, 10) is None
        assert shared.release_shared(key, reader) is True
        # The refused writer is first in line on a store that queues its writers (its
        # turn may even have been handed to it by the release), so it asks again.
        assert shared.acquire(key, writer, 10) is not None

    def test_a_writer_excludes_readers(self, shared: Any, key: str) -> None:
        writer = _token()
        assert shared.acquire(key, writer, 10) is not None
        assert shared.acquire_shared(key, _token(), 10) is None
        assert shared.shared_holders(key) == []
        assert shared.release(key, writer) is True
        assert shared.acquire_shared(key, _token(), 10) is not None

    def test_a_waiting_writer_stops_new_readers(self, shared: Any, key: str) -> None:
        first, writer, late = _token(), _token(), _token()
        fence = shared.acquire_shared(key, first, 10)
        assert shared.acquire(key, writer, 10) is None  # refused by the reader: now waits
        assert shared.acquire_shared(key, late, 10) is None  # no new reader gets past it
        assert shared.acquire_shared(key, first, 10) == fence  # a holder's retry still does
        assert shared.release_shared(key, first) is True
        assert shared.acquire(key, writer, 10) is not None
        assert shared.acquire_shared(key, late, 10) is None
        assert shared.release(key, writer) is True
        assert shared.acquire_shared(key, late, 10) is not None  # the mark went with it

    def test_fencing_tokens_rise_across_both_kinds(self, shared: Any, key: str) -> None:
        fences = []
        for round_ in range(6):
            token = _token()
            if round_ % 2:
                fences.append(shared.acquire(key, token, 10))
                assert shared.release(key, token) is True
            else:
                fences.append(shared.acquire_shared(key, token, 10))
                assert shared.release_shared(key, token) is True
        together = [_token(), _token()]
        fences += [shared.acquire_shared(key, token, 10) for token in together]
        for token in together:
            shared.release_shared(key, token)
        fences.append(shared.acquire(key, _token(), 10))
        assert None not in fences
        assert fences == sorted(set(fences)), fences

    def test_same_reader_is_idempotent(self, shared: Any, key: str) -> None:
        token = _token()
        fence = shared.acquire_shared(key, token, 10)
        assert shared.acquire_shared(key, token, 10) == fence
        assert shared.shared_holders(key) == [token]

    def test_release_is_token_checked(self, shared: Any, key: str) -> None:
        first, second = _token(), _token()
        shared.acquire_shared(key, first, 10)
        shared.acquire_shared(key, second, 10)
        assert shared.release_shared(key, _token()) is False
        assert shared.release_shared(key, first) is True
        again = shared.release_shared(key, first)  # a retry after a lost reply
        assert again is True if CROSS_HOST in shared.capabilities else again in (True, False)
        assert shared.shared_holders(key) == [second]
        assert shared.acquire(key, _token(), 10) is None  # the other reader still holds it
        assert shared.release(key, second) is False  # an exclusive release frees no reader
        assert shared.shared_holders(key) == [second]

    def test_shared_leases_run_out(self, shared: Any, key: str) -> None:
        needs(shared, EXPIRY)
        stale = _token()
        shared.acquire_shared(key, stale, 0.2)
        time.sleep(0.5)
        assert shared.shared_holders(key) == []
        assert shared.acquire(key, _token(), 10) is not None
        assert shared.release_shared(key, stale) is False
        assert shared.extend_shared(key, stale, 10) is False

    def test_extend_keeps_the_shared_lease(self, shared: Any, key: str) -> None:
        needs(shared, EXPIRY)
        token = _token()
        shared.acquire_shared(key, token, 1.0)
        assert shared.extend_shared(key, token, 30) is True
        assert shared.extend_shared(key, _token(), 30) is False
        time.sleep(1.5)
        assert shared.shared_holders(key) == [token]
        assert shared.acquire(key, _token(), 10) is None

    def test_a_writer_that_stops_trying_holds_readers_back_only_for_a_while(
        self, shared: Any, key: str
    ) -> None:
        needs(shared, EXPIRY)
        shared.acquire_shared(key, _token(), _BRIEF)
        assert shared.acquire(key, _token(), 10) is None  # and never comes back
        assert shared.acquire_shared(key, _token(), 10) is None
        # A queued store may also keep the writer's place in line for its waiter grace.
        deadline = time.monotonic() + _BRIEF + WRITER_GRACE + 10
        while shared.acquire_shared(key, _token(), 10) is None:
            assert time.monotonic() < deadline, "a vanished writer kept readers out"
            time.sleep(0.05)

    def test_wait_shared_honours_its_timeout_closely(self, shared: Any, key: str) -> None:
        shared.acquire(key, _token(), 60)
        assert median_overrun(lambda: shared.wait_shared(key, 0.05), 0.05) < _LATE

    def test_a_writers_release_wakes_readers(self, shared: Any, key: str) -> None:
        needs(shared, NOTIFY)
        writer = _token()
        shared.acquire(key, writer, 60)
        assert woken_by(
            lambda: shared.wait_shared(key, _LONG_WAIT), lambda: shared.release(key, writer)
        )

    def test_the_last_readers_release_wakes_a_writer(self, shared: Any, key: str) -> None:
        needs(shared, NOTIFY)
        readers, writer = [_token(), _token()], _token()
        for reader in readers:
            shared.acquire_shared(key, reader, 60)
        assert shared.acquire(key, writer, 60) is None
        wait: Callable[[], object] = lambda: shared.wait(key, _LONG_WAIT)  # noqa: E731
        if isinstance(shared, QueuedStore):
            wait = lambda: shared.wait_turn(key, writer, _LONG_WAIT)  # noqa: E731
        assert shared.release_shared(key, readers[0]) is True
        assert woken_by(wait, lambda: shared.release_shared(key, readers[1]))
        assert shared.acquire(key, writer, 60) is not None

    def test_a_writers_wait_ends_with_the_readers_leases(self, shared: Any, key: str) -> None:
        needs(shared, EXPIRY)
        shared.acquire_shared(key, _token(), _BRIEF)
        writer = _token()
        assert shared.acquire(key, writer, 10) is None
        started = time.monotonic()
        if isinstance(shared, QueuedStore):
            shared.wait_turn(key, writer, _LONG_WAIT)
        else:
            shared.wait(key, _LONG_WAIT)
        assert time.monotonic() - started < 5.0
        assert shared.acquire(key, writer, 10) is not None

    def test_racing_readers_and_writers_never_mix(self, shared: Any, key: str) -> None:
        needs(shared, TOKEN_CHECKED)
        for _ in range(3):
            won = self._race_kinds(shared, f"{key}:{uuid.uuid4().hex}")
            assert won == ["exclusive"] or set(won) == {"shared"}, won

    @staticmethod
    def _race_kinds(shared: Any, key: str) -> list[str]:
        """Readers and writers released at once on a free key: the kinds that got it."""
        turns = itertools.count()

        def attempt() -> tuple[str, int | None]:
            if next(turns) % 2:
                return "shared", shared.acquire_shared(key, _token(), 10)
            return "exclusive", shared.acquire(key, _token(), 10)

        won = [kind for kind, fence in race(attempt) if fence is not None]
        assert won
        return won
