"""AsyncPostgresStore: the asyncio twin of :class:`~.store.PostgresStore`.

Same table, statements and rules, on ``psycopg.AsyncConnection``. A store built from a
URL keeps its connections and its listener per event loop, because asyncio
connections belong to the loop that opened them (``asyncio.run`` twice must not
share one). Waiters are futures woken by a listener task on that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from ...errors import StoreError
from ..base import LockInfo
from ..shared.threaded import resolve
from . import sql as q
from .busy import acquire_params, afetch_or_busy
from .common import (
    CAPABILITIES,
    GUARD,
    GUARD_GRACE,
    POLL_WITHOUT_LISTENER,
    Configured,
    checked_conninfo,
    given_conninfo,
    is_broken,
    log,
    millis,
    not_a_connection,
    parse_url,
    server_conninfo,
    translate,
)
from .permits import AsyncPostgresPermits

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")
AConn = psycopg.AsyncConnection[Any]

_LISTEN_IDLE = 30.0
_ORPHANED: list[AConn] = []  # inherited across fork: kept alive, never touched


class _LoopState:
    """One event loop's connections, waiters and listener task for one store."""

    def __init__(self, size: int) -> None:
        self.idle: list[AConn] = []
        self.slots = asyncio.Semaphore(size)
        self.busy = asyncio.Lock()  # serialises a single connection passed in
        self.waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.ready = False  # LISTEN is active on the listener's connection
        weakref.finalize(self, _finish, self.idle, os.getpid())

    def wake(self, topic: str | None = None) -> None:
        """Wake the waiters of ``topic`` (every waiter when ``None``)."""
        groups = self.waiters.values() if topic is None else [self.waiters.get(topic, set())]
        for futures in list(groups):
            for future in list(futures):
                resolve(future)


def _finish(idle: list[AConn], pid: int) -> None:
    # A loop that ended without aclose(): close the sockets without it (sync libpq call).
    # Never in a forked child: that would end the parent's sessions on the shared sockets.
    if os.getpid() != pid:
        _ORPHANED.extend(idle)
        return
    for conn in idle:
        with contextlib.suppress(Exception):
            conn.pgconn.finish()
    idle.clear()


class AsyncPostgresStore(AsyncPostgresPermits, Configured):
    """Async PostgreSQL lock store; see :class:`~remotelock.stores.postgres.store.PostgresStore`.

    Build it from a URL (``AsyncPostgresStore.from_url(url)``, or ``as_async()`` of a
    URL-built ``PostgresStore``), from ``conninfo=``, or from a
    ``psycopg.AsyncConnection`` / ``psycopg_pool.AsyncConnectionPool`` of your own.
    Call ``await store.aclose()`` on each event loop that used it before the loop ends.
    """

    capabilities: frozenset[str] = CAPABILITIES

    def __init__(
        self,
        connection: Any = None,
        *,
        conninfo: str | None = None,
        table: str = "remotelock_locks",
        schema: str | None = None,
        timeout: float = 5.0,
        pool_size: int = 10,
        listen: bool = True,
        listen_url: str | None = None,
    ) -> None:
        self._configure(
            connection,
            conninfo,
            table=table,
            schema=schema,
            timeout=timeout,
            pool_size=pool_size,
            listen=listen,
            listen_url=listen_url,
        )
        self._conninfo = None if conninfo is None else checked_conninfo(conninfo)
        self._owns = conninfo is not None  # else a connection or pool was passed in
        self._own = "" if conninfo is None else server_conninfo(conninfo, self.timeout)
        self._conn: AConn | None = None
        self._pool: Any = None
        if isinstance(connection, psycopg.AsyncConnection):
            self._conn = connection
        elif connection is not None:
            if not (hasattr(connection, "getconn") and hasattr(connection, "putconn")):
                raise not_a_connection(
                    connection, "a psycopg.AsyncConnection or a psycopg_pool.AsyncConnectionPool"
                )
            self._pool = connection
        self._pid = os.getpid()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._schema_ready = False
        self._configured: weakref.WeakSet[AConn] = weakref.WeakSet()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build a store from a URL (see ``PostgresStore``); connects on first use only."""
        conninfo, own = parse_url(url, dict(options))
        return cls(conninfo=conninfo, **own._asdict())

    def _state(self) -> _LoopState:
        if self._pid != os.getpid():  # forked: the parent's loops and connections are not ours
            if not self._owns:
                raise StoreError("a connection or pool given to the store cannot cross os.fork()")
            self._pid, self._loops = os.getpid(), weakref.WeakKeyDictionary()
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(self.pool_size)
        return state

    # -- connections ----------------------------------------------------------------------

    async def _take(self, state: _LoopState) -> AConn:
        if self._pool is not None:
            return await self._pool.getconn(timeout=self.timeout)  # type: ignore[no-any-return]
        gate = state.busy if self._conn is not None else state.slots
        try:
            await asyncio.wait_for(gate.acquire(), self.timeout)
        except asyncio.TimeoutError:
            raise psycopg.OperationalError(
                f"the store's connections stayed busy for {self.timeout:g} s"
            ) from None
        if self._conn is not None:
            return self._conn
        try:
            if state.idle:
                return state.idle.pop()
            return await psycopg.AsyncConnection.connect(self._own, autocommit=True)
        except BaseException:
            gate.release()
            raise

    async def _give(self, state: _LoopState, conn: AConn, ok: bool) -> None:
        if self._pool is not None:
            if not ok and not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
            await self._pool.putconn(conn)
            return
        if self._conn is not None:
            try:
                if not ok and not conn.closed and not conn.autocommit:
                    with contextlib.suppress(psycopg.Error):
                        await conn.rollback()  # a failed statement left its transaction aborted
            finally:
                state.busy.release()
            return
        try:
            if ok and not conn.closed:
                state.idle.append(conn)
            else:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
        finally:
            state.slots.release()

    async def _flush(self, state: _LoopState) -> None:
        if self._pool is not None:
            await self._pool.check()
        await _close_idle(state)

    async def _step(self, step: str, key: str, run: Callable[[AConn], Awaitable[T]]) -> T:
        """See ``PostgresStore._step``: bounded, translated, retried once on a dead connection."""
        state = self._state()
        retried = False
        with translate(self, step, key):
            while True:
                conn = await self._take(state)
                fired = False
                try:
                    watch = GUARD.watch(conn, self.timeout + GUARD_GRACE)
                    try:
                        await self._prepare(conn)
                        result = await run(conn)
                        if not conn.autocommit:
                            await conn.commit()
                    finally:
                        fired = GUARD.done(watch)
                except psycopg.Error as exc:
                    await self._give(state, conn, ok=False)
                    if fired:
                        raise psycopg.OperationalError(
                            f"no reply from PostgreSQL within {self.timeout + GUARD_GRACE:g} s"
                        ) from exc
                    if not retried and self._conn is None and is_broken(exc, conn):
                        retried = True
                        await self._flush(state)
                        continue
                    raise
                except BaseException:
                    await self._give(state, conn, ok=False)
                    raise
                await self._give(state, conn, ok=not fired)
                return result

    async def _prepare(self, conn: AConn) -> None:
        if not self._owns and conn not in self._configured:
            await conn.execute(q.SET_TIMEOUTS, {"timeout": str(millis(self.timeout))})
            if not conn.autocommit:
                await conn.commit()
            self._configured.add(conn)
        if not self._schema_ready:
            params = {
                "schema": self.schema,
                "table": self.table,
                "permits": q.permits_table(self.table),
            }
            async with conn.transaction():
                await conn.execute(q.LOCK_DDL, {"lock_id": q.lock_id(self.schema, self.table)})
                if await (await conn.execute(q.TABLE_EXISTS, params)).fetchone() is None:
                    for statement in self._sql.create:  # creates, or migrates an older table
                        await conn.execute(statement)
            self._schema_ready = True

    # -- the Store protocol -----------------------------------------------------------------

    async def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """See :meth:`PostgresStore.acquire`."""
        params = acquire_params(key, token, ttl, self.timeout)
        statement = self._sql.acquire
        row = await self._step("acquire", key, lambda c: afetch_or_busy(c, statement, params))
        return None if row is None else int(row[0])

    async def release(self, key: str, token: str) -> bool:
        """See :meth:`PostgresStore.release`."""
        params = self._notice(key, token=token)
        return await self._step("release", key, lambda c: _rows(c, self._sql.release, params)) > 0

    async def extend(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`PostgresStore.extend`."""
        params = {"key": key, "token": token, "ttl": float(ttl)}
        return await self._step("extend", key, lambda c: _rows(c, self._sql.extend, params)) > 0

    async def owner(self, key: str) -> str | None:
        """See :meth:`PostgresStore.owner`."""
        row = await self._holder("owner", key)
        return None if row is None else str(row[0])

    async def wait(self, key: str, timeout: float) -> None:
        """See :meth:`PostgresStore.wait`; the task sleeps on a future, not a thread."""
        deadline = time.monotonic() + timeout
        state = self._state()
        topic = q.payload(key)
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        listening = self.listen and self._subscribe(state, topic, woken)
        try:
            row = await self._holder("wait", key)
            if row is None:
                return
            left = float(row[1]) + 0.001
            pause = left if listening else min(left, POLL_WITHOUT_LISTENER)
            await asyncio.wait((woken,), timeout=max(0.0, min(deadline - time.monotonic(), pause)))
        finally:
            futures = state.waiters.get(topic)
            if futures is not None:
                futures.discard(woken)
                if not futures:
                    del state.waiters[topic]

    async def _holder(self, step: str, key: str) -> Any:
        return await self._step(step, key, lambda c: _one(c, self._sql.holder, {"key": key}))

    def _notice(self, key: str, **params: Any) -> dict[str, Any]:
        return {"key": key, "channel": self._sql.channel, "payload": q.payload(key), **params}

    # -- admin ------------------------------------------------------------------------------

    async def force_release(self, key: str) -> bool:
        """See :meth:`PostgresStore.force_release`."""
        params = self._notice(key)
        rows = await self._step(
            "force_release", key, lambda c: _rows(c, self._sql.force_release, params)
        )
        return rows > 0

    async def iter_locks(self, prefix: str = "") -> AsyncIterator[LockInfo]:
        """See :meth:`PostgresStore.iter_locks`."""

        async def fetch(conn: AConn) -> list[Any]:
            return await (await conn.execute(self._sql.list, {"prefix": prefix})).fetchall()

        for r in await self._step("iter_locks", prefix, fetch):
            yield LockInfo(str(r[0]), str(r[1]), int(r[2]), float(r[3]))

    # -- the listener task --------------------------------------------------------------------

    def _subscribe(self, state: _LoopState, topic: str, future: asyncio.Future[None]) -> bool:
        state.waiters.setdefault(topic, set()).add(future)
        if state.task is None or state.task.done():
            state.task = asyncio.get_running_loop().create_task(self._listen_loop(state))
        return state.ready

    async def _listener_conninfo(self) -> str:
        if self.listen_url is not None:
            base = self.listen_url
        elif self._conninfo is not None:
            base = self._conninfo
        else:
            base = await self._step("listen", "", _given_info)
        return server_conninfo(base, self.timeout, listener=True)

    async def _listen_loop(self, state: _LoopState) -> None:
        backoff = 0.05
        while True:
            try:
                conninfo = await self._listener_conninfo()
                async with await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True
                ) as conn:
                    await conn.execute(self._sql.listen)
                    state.ready, backoff = True, 0.05
                    if await self._read(conn, state):
                        return
            except Exception as exc:  # never let the task die on a surprise
                log.debug("PostgreSQL listener lost its connection: %s", exc)
            finally:
                state.ready = False
                state.wake()  # a release may have gone unheard: everyone re-checks
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
            if not state.waiters:
                return

    async def _read(self, conn: AConn, state: _LoopState) -> bool:
        quiet_since = time.monotonic()
        while True:
            async for note in conn.notifies(timeout=0.5):
                state.wake(note.payload)
            now = time.monotonic()
            if state.waiters:
                quiet_since = now
            elif now - quiet_since > _LISTEN_IDLE:
                return True

    # -- lifecycle ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop this loop's listener and close its idle connections (the store reconnects
        if used again). A connection or pool passed in is left open."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is None:
            return
        if state.task is not None:
            state.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.task
        await _close_idle(state)

    def __repr__(self) -> str:
        where = f"{self.schema}.{self.table}" if self.schema else self.table
        return f"{type(self).__name__}(table={where!r})"


async def _one(conn: AConn, statement: Any, params: dict[str, Any]) -> Any:
    return await (await conn.execute(statement, params)).fetchone()


async def _rows(conn: AConn, statement: Any, params: dict[str, Any]) -> int:
    return (await conn.execute(statement, params)).rowcount


async def _close_idle(state: _LoopState) -> None:
    idle, state.idle[:] = list(state.idle), []
    for conn in idle:
        with contextlib.suppress(psycopg.Error):
            await conn.close()


async def _given_info(conn: AConn) -> str:
    return given_conninfo(conn.info)


__all__ = ["AsyncPostgresStore"]
