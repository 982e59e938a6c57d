"""Shared (reader) locks through the lock layer: ``RemoteLock(key, shared=True)`` and
``@remote_locked(..., shared=True)``, on every store that has them."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import tenacity

from remotelock import LockLost, LockTimeout, RemoteLock, remote_locked
from remotelock.stores import MemoryStore
from remotelock.stores.base import Store
from remotelock.stores.readers import SharedStore
from tests.helpers.crossproc import assert_readers_writers, most_at_once, run_counter
from tests.helpers.elsewhere import held_elsewhere, in_thread

PATIENCE = tenacity.stop_after_delay(20)


@pytest.fixture
def shared_store(store: Store) -> Store:
    if not isinstance(store, SharedStore):
        pytest.skip(f"{store!r} has no shared locks")
    return store


def reader(key: str, store: Store, **options: Any) -> RemoteLock:
    options.setdefault("stop", PATIENCE)
    return RemoteLock(key, store=store, shared=True, **options)


def writer(key: str, store: Store, **options: Any) -> RemoteLock:
    options.setdefault("stop", PATIENCE)
    return RemoteLock(key, store=store, **options)


def test_readers_hold_together_in_threads(shared_store: Store, key: str) -> None:
    together = threading.Barrier(4, timeout=20)  # breaks unless all four are inside at once

    def read(_: int) -> int:
        with reader(key, shared_store) as lease:
            together.wait()
            return lease.fencing_token

    with ThreadPoolExecutor(4) as pool:
        fences = list(pool.map(read, range(4)))
    assert len(set(fences)) == 4


def test_a_writer_waits_for_the_readers_then_new_readers_wait_for_it(
    shared_store: Store, key: str
) -> None:
    order: list[str] = []
    first = reader(key, shared_store).acquire()
    writing = threading.Event()

    def write() -> None:
        with writer(key, shared_store):
            writing.set()
            order.append("writer")
            time.sleep(0.2)

    def late_read() -> None:
        with reader(key, shared_store):
            order.append("late reader")

    def probe() -> Any:  # from another thread: this one holds a shared lease already
        return in_thread(lambda: reader(key, shared_store).acquire(blocking=False))

    with ThreadPoolExecutor(3) as pool:
        wrote = pool.submit(write)
        deadline = time.monotonic() + 10
        while (held := probe()) is not None:
            held.release()  # the writer has not tried yet
            assert time.monotonic() < deadline, "the waiting writer never held readers back"
            time.sleep(0.05)
        read = pool.submit(late_read)
        time.sleep(0.3)
        assert order == []  # neither got in while the first reader holds
        first.release()
        wrote.result(timeout=20)
        read.result(timeout=20)
    assert order == ["writer", "late reader"]


def test_a_stream_of_readers_does_not_starve_a_writer(shared_store: Store, key: str) -> None:
    """Readers that overlap without pause would keep the key shared forever; a waiting
    writer stops new ones from entering, so it gets in once those inside have left."""
    stop = threading.Event()
    overlap = threading.Semaphore(0)

    def stream() -> int:
        entries = 0
        while not stop.is_set():
            with reader(key, shared_store):
                entries += 1
                overlap.release()
                time.sleep(0.1)
        return entries

    with ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(stream) for _ in range(4)]
        for _ in range(8):  # the stream is flowing: readers overlap
            assert overlap.acquire(timeout=20)
        try:
            started = time.monotonic()
            with writer(key, shared_store, stop=tenacity.stop_after_delay(15)) as lease:
                waited = time.monotonic() - started
                assert shared_store.shared_holders(key) == []  # type: ignore[attr-defined]
                assert lease.fencing_token > 0
        finally:
            stop.set()
        assert all(done.result(timeout=30) > 0 for done in readers)
    assert waited < 15


def test_a_writer_excludes_readers_until_it_releases(shared_store: Store, key: str) -> None:
    with held_elsewhere(writer(key, shared_store)) as lease:
        with pytest.raises(LockTimeout):
            reader(key, shared_store).acquire(timeout=0.3)
        assert reader(key, shared_store).locked()
    assert not reader(key, shared_store).locked()
    with held_elsewhere(reader(key, shared_store)) as shared:
        assert shared.fencing_token > lease.fencing_token
        with pytest.raises(LockTimeout):
            writer(key, shared_store).acquire(timeout=0.3)


def test_fencing_tokens_rise_across_kinds(shared_store: Store, key: str) -> None:
    fences = []
    for make in (reader, writer, reader, reader, writer):
        with make(key, shared_store) as lease:
            fences.append(lease.fencing_token)
    assert fences == sorted(set(fences))


def test_a_shared_lease_is_renewed_while_held(shared_store: Store, key: str) -> None:
    with reader(key, shared_store, ttl=0.6) as lease:
        time.sleep(1.5)
        assert not lease.lost
        assert shared_store.acquire(key, "someone", 10) is None


def test_a_lost_shared_lease_raises_lock_lost(shared_store: Store, key: str) -> None:
    lock = reader(key, shared_store)
    lease = lock.acquire()
    assert shared_store.release_shared(key, lease.token) is True  # type: ignore[attr-defined]
    assert lease.extend() is False
    assert lease.lost
    with pytest.raises(LockLost):
        lock.finish(lease, raised=False)


def test_no_upgrade_from_shared_to_exclusive(memory_store: MemoryStore, key: str) -> None:
    started = time.monotonic()
    with reader(key, memory_store):
        with pytest.raises(RuntimeError, match="cannot be turned into an exclusive"):
            writer(key, memory_store).acquire()
        with pytest.raises(RuntimeError, match="cannot be turned into an exclusive"):
            writer(key, memory_store, reentrant=True).acquire()
        with pytest.raises(RuntimeError, match="not reentrant"):
            reader(key, memory_store).acquire()  # a second reader entry needs reentrant
    assert time.monotonic() - started < 5


def test_reentrant_readers_and_a_writer_reading(memory_store: MemoryStore, key: str) -> None:
    with (
        reader(key, memory_store, reentrant=True) as outer,
        reader(key, memory_store, reentrant=True) as inner,
    ):
        assert inner is outer
        assert outer.depth == 2
    with writer(key, memory_store, reentrant=True) as held:
        with reader(key, memory_store, reentrant=True) as read:
            assert read is held  # the exclusive holder may read: its own lease again
        assert not held.released
    assert memory_store.owner(key) is None


def test_the_decorator(shared_store: Store, key: str) -> None:
    inside = 0
    most = 0
    mutex = threading.Lock()

    @remote_locked(key, store=shared_store, shared=True, stop=PATIENCE)
    def read(*, fencing_token: int | None = None) -> int | None:
        nonlocal inside, most
        with mutex:
            inside += 1
            most = max(most, inside)
        time.sleep(0.3)
        with mutex:
            inside -= 1
        return fencing_token

    @remote_locked(key, store=shared_store, stop=PATIENCE)
    def write() -> int:
        return inside

    with ThreadPoolExecutor(3) as pool:
        reads = [pool.submit(read) for _ in range(3)]
        assert all(isinstance(done.result(timeout=30), int) for done in reads)
    assert most >= 2
    assert write() == 0


def test_async_readers_and_writer(shared_store: Store, key: str) -> None:
    async def main() -> list[str]:
        events: list[str] = []
        all_in = asyncio.Event()  # the writer comes once the three readers hold together

        async def read(name: str) -> None:
            async with reader(key, shared_store):
                events.append(name)
                if len(events) == 3:
                    all_in.set()
                await asyncio.wait_for(all_in.wait(), 20)
                await asyncio.sleep(0.1)

        async def write() -> None:
            await asyncio.wait_for(all_in.wait(), 20)
            async with writer(key, shared_store):
                events.append("writer")

        await asyncio.gather(read("r1"), read("r2"), read("r3"), write())
        return events

    events = asyncio.run(main())
    assert events[-1] == "writer"
    assert sorted(events[:3]) == ["r1", "r2", "r3"]


def test_bad_arguments(memory_store: MemoryStore) -> None:
    with pytest.raises(TypeError, match="shared must be True or False"):
        RemoteLock("k", store=memory_store, shared="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shared=True cannot be combined with limit"):
        remote_locked("k", store=memory_store, shared=True, limit=3)
    callables = pytest.importorskip("remotelock.stores.callable")
    no_readers = callables.CallableStore(lambda _: None, lambda _k, _t: None, lambda _: None)
    with pytest.raises(TypeError, match="shared=True needs a store with shared locks"):
        remote_locked("k", store=no_readers, shared=True)


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/locks.db"
    server = request.getfixturevalue(f"{kind}_server")
    return f"{server.url}?prefix=rw-{tmp_path.name}" if kind == "redis" else str(server.url)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    ["sqlite", pytest.param("redis", marks=pytest.mark.redis),
     pytest.param("postgres", marks=pytest.mark.postgres)],
)  # fmt: skip
def test_readers_and_writers_across_processes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(kind, tmp_path, request)
    final, sections = run_counter(
        url, f"rw:{tmp_path.name}", tmp_path, processes=6, count=24, work=0.005, mix=4
    )
    assert final == 6 * 24 // 4  # every exclusive read-modify-write counted
    assert_readers_writers(sections)
    assert most_at_once([s for s in sections if s["kind"] == "shared"]) >= 2
