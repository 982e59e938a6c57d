"""RemoteLock without the decorator: ``with``, ``async with``, and the fencing token.

A lease can be lost (a long GC pause, a frozen VM, a network partition) while the
holder still believes it holds the lock. The fencing token guards against that: pass it
with every write, and let the resource refuse tokens older than the newest it has seen.

    python examples/remote_lock_block.py
"""

from __future__ import annotations

import asyncio
import threading

import tenacity

from remotelock import LockTimeout, RemoteLock
from remotelock.stores import MemoryStore


class Ledger:
    """A resource that remembers the highest fencing token it has accepted."""

    def __init__(self) -> None:
        self.highest = 0
        self.entries: list[str] = []

    def write(self, entry: str, fencing_token: int) -> None:
        if fencing_token < self.highest:
            raise PermissionError(f"stale writer (token {fencing_token} < {self.highest})")
        self.highest = fencing_token
        self.entries.append(entry)


def main() -> None:
    store = MemoryStore()  # any store: SQLiteStore(), RedisStore.from_url(...), ...
    ledger = Ledger()
    lock = RemoteLock("ledger", store=store, ttl=30, stop=tenacity.stop_after_delay(5))

    with lock as lease:
        ledger.write("first", lease.fencing_token)

    def impatient_worker() -> None:
        busy = RemoteLock("ledger", store=store, stop=tenacity.stop_after_delay(0.2))
        try:
            busy.acquire()
        except LockTimeout as error:
            print(f"as expected: {error}")

    lease = lock.acquire()  # the threading.Lock form: release() from any thread
    try:
        ledger.write("second", lease.fencing_token)
        # Another worker finds the lock busy and gives up. (Asking again from this
        # thread would raise RuntimeError at once: locks are not reentrant.)
        worker = threading.Thread(target=impatient_worker)
        worker.start()
        worker.join()
    finally:
        lock.release()

    async def async_writer() -> None:
        async with RemoteLock("ledger", store=store) as lease:
            ledger.write("third", lease.fencing_token)

    asyncio.run(async_writer())
    print(f"ledger: {ledger.entries}, highest token {ledger.highest}")


if __name__ == "__main__":
    main()
