"""Renewal scales: one loop per store (and event loop), leases renewed in batches, the
ones closest to their deadline first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from remotelock import Lease, RemoteLock
from remotelock.lease import local_deadline
from remotelock.renewal import BATCH, due_batches
from remotelock.stores import MemoryStore


class CountingStore(MemoryStore):
    """Counts renewal calls: one lease at a time, or many at once."""

    def __init__(self) -> None:
        super().__init__()
        self.singles = 0
        self.batches: list[int] = []

    def extend(self, key: str, token: str, ttl: float) -> bool:
        self.singles += 1
        return super().extend(key, token, ttl)

    def extend_many(self, leases: Sequence[tuple[str, str, float]]) -> list[bool]:
        self.batches.append(len(leases))
        return [super(CountingStore, self).extend(*lease) for lease in leases]


def test_sync_leases_are_renewed_in_batches(key: str) -> None:
    store = CountingStore()
    leases = [RemoteLock(f"{key}:{n}", store=store, ttl=0.6).acquire() for n in range(250)]
    time.sleep(1.5)  # several renewal rounds (every 0.2 s)
    assert not any(lease.lost for lease in leases)
    assert store.singles == 0
    assert store.batches, "no renewal happened"
    assert max(store.batches) <= BATCH
    # 250 leases in about 7 rounds: one call per lease would be some 1,750 calls.
    assert sum(store.batches) >= 250
    assert len(store.batches) < 150
    for lease in leases:
        assert lease.release() is True


def test_leases_of_a_store_without_batches_are_renewed_one_by_one(
    callable_store: object, key: str
) -> None:
    store: Any = callable_store
    leases = [RemoteLock(f"{key}:{n}", store=store, ttl=0.3).acquire() for n in range(5)]
    time.sleep(1.0)
    assert not any(lease.lost for lease in leases)
    for lease in leases:
        lease.release()


async def test_async_leases_share_one_renewal_task(key: str) -> None:
    store = CountingStore()
    leases = [await RemoteLock(f"{key}:{n}", store=store, ttl=0.6).aacquire() for n in range(200)]
    renewers = {task for task in asyncio.all_tasks() if task.get_name() == "remotelock-renew"}
    assert len(renewers) == 1
    await asyncio.sleep(1.5)
    assert not any(lease.lost for lease in leases)
    assert store.singles == 0
    assert max(store.batches) <= BATCH
    assert len(store.batches) < 150
    for lease in leases:
        assert await lease.arelease() is True
    for _ in range(5):  # the idle task ends once it sees nothing left to renew
        await asyncio.sleep(0)
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "remotelock-renew"]


def _lease(deadline_in: float, ttl: float = 10.0) -> Lease:
    return Lease("k", "t", 1, ttl, local_deadline(time.monotonic(), deadline_in), keeper=None)


def test_under_overload_the_closest_deadlines_go_first() -> None:
    leases = [_lease(deadline) for deadline in (9.0, 3.0, 6.0, 0.5, 12.0)]
    expired = _lease(0.0001)
    released = _lease(5.0)
    released.released = True
    time.sleep(0.01)
    batches = list(due_batches([*leases, expired, released], batched=True))
    assert batches == [sorted(leases, key=lambda lease: lease.deadline)]
    one_by_one = list(due_batches(leases, batched=False))
    assert [batch[0] for batch in one_by_one] == batches[0]
    assert all(len(batch) == 1 for batch in one_by_one)
