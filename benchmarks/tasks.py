"""Scenario (f), asyncio half: a crowd of tasks in one event loop waiting on one Redis key.

The same measurement as :mod:`benchmarks.crowd` for threads: one task holds the lock
while ``waiters`` tasks ask for it; over a few seconds of waiting the requests the
process sends (every command or script call, counted in redis-py's asyncio connection
class, except the holder's own calls and renewals) and its connections are counted;
then the holder releases and the crowd passes through one at a time. remotelock runs
on ``AsyncRedisStore``, redis-py on its asyncio ``Lock``; python-redis-lock has no
asyncio side. Each library runs in a process of its own (``python -m benchmarks.tasks``,
started by :func:`benchmarks.crowd.run`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

import redis
import redis.asyncio

from benchmarks.adapters import WAIT_LIMIT
from benchmarks.crowd import outcome

HOLDER = "holder"
"""The holder task's name: its own requests are not the cost of waiting."""


def _count_requests() -> list[int]:
    """Count what every asyncio connection of this process sends, but the holder's."""
    sent = [0]
    send = redis.asyncio.connection.AbstractConnection.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        task = asyncio.current_task()
        if task is None or task.get_name() != HOLDER:
            sent[0] += 1
        await send(self, command, check_health)

    redis.asyncio.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    return sent


class _Ours:
    def __init__(self, url: str) -> None:
        from remotelock import RemoteLock
        from remotelock.stores.redis.aio import AsyncRedisStore

        self.store = AsyncRedisStore.from_url(url)
        self.lock_class = RemoteLock

    async def acquire(self, key: str) -> Any:
        lock = self.lock_class(key, store=self.store, ttl=30)
        return lock, await lock.aacquire(timeout=WAIT_LIMIT)

    async def release(self, handle: Any) -> None:
        lock, lease = handle
        await lock.arelease(lease)


class _RedisPy:
    def __init__(self, url: str) -> None:
        self.client = redis.asyncio.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    async def acquire(self, key: str) -> Any:
        lock = self.client.lock(key, timeout=30, sleep=0.1, blocking_timeout=WAIT_LIMIT)
        if not await lock.acquire():
            raise TimeoutError(key)
        return lock

    async def release(self, handle: Any) -> None:
        await handle.release()


async def _crowd(kind: str, url: str, waiters: int, idle: float, settle: float) -> dict[str, Any]:
    sent = _count_requests()
    adapter: Any = _Ours(url) if kind == "remotelock" else _RedisPy(url)
    admin = redis.Redis.from_url(url)
    key = f"tasks:{uuid.uuid4().hex[:8]}"
    baseline = int(admin.info("clients")["connected_clients"])
    holder_task = asyncio.create_task(adapter.acquire(key), name=HOLDER)
    holder = await holder_task
    got, errors = [0], []

    async def wait_in_line() -> None:
        try:
            await adapter.release(await adapter.acquire(key))
            got[0] += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:120])

    crowd = [asyncio.create_task(wait_in_line()) for _ in range(waiters)]
    await asyncio.sleep(settle)  # everyone has asked once and waits
    before = sent[0]
    await asyncio.sleep(idle)
    idle_sent = sent[0] - before
    connections = int(admin.info("clients")["connected_clients"]) - baseline - 1  # ours
    released = time.monotonic()
    try:
        await asyncio.create_task(adapter.release(holder), name=HOLDER)
        holder_released = True
    except Exception as exc:
        holder_released = False
        errors.append(f"{type(exc).__name__}: {exc}"[:120])
    await asyncio.wait(crowd, timeout=120)
    return outcome(
        got[0], errors, connections, idle_sent / waiters / idle,
        released=released, holder_released=holder_released,
    )  # fmt: skip


if __name__ == "__main__":
    kind, url, waiters, idle, settle = sys.argv[1:6]
    crowd = _crowd(kind, url, int(waiters), float(idle), float(settle))
    print(json.dumps(asyncio.run(crowd)))
