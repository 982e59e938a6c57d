"""A store's server stops while a waiter waits, and comes back (Redis and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

import tenacity

from remotelock import RemoteLock, StoreUnavailable


class Server(Protocol):
    def stop(self) -> None: ...

    def start(self) -> Any: ...


def stop_server_while_waiting(store: Any, server: Server) -> float:
    """One thread holds "k", another waits for it (stop: 30 s); the server stops.

    Checks that the waiter fails with :class:`StoreUnavailable` (not :class:`LockTimeout`,
    never a hang) and that, once the server is back on the same port, the same store
    takes a lock again. Returns how long after the stop the waiter gave up.
    """
    holder = RemoteLock("k", store=store, ttl=30).acquire()
    errors: list[BaseException] = []
    finished: list[float] = []

    def wait() -> None:
        try:
            RemoteLock("k", store=store, stop=tenacity.stop_after_delay(30)).acquire()
        except BaseException as exc:
            errors.append(exc)
        finished.append(time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    stopped = time.monotonic()
    server.stop()
    waiter.join(60)
    assert errors
    assert isinstance(errors[0], StoreUnavailable)
    holder.released = True  # its server is gone; don't let the renewer keep trying
    server.start()
    with RemoteLock("after-restart", store=store) as lease:
        assert store.owner("after-restart") == lease.token
    return finished[0] - stopped


__all__ = ["stop_server_while_waiting"]
