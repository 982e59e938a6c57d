"""A TCP proxy that injects network faults between store clients and their server.

Killing or freezing a server hits every client at once; real outages are often
narrower: one client's packets are slow, or vanish, or its connection is cut, or a
request runs on the server and only the reply is lost. A :class:`FaultProxy` does
each of those to the clients connected through it, while other clients go on. Its
asyncio loop runs in a daemon thread, so blocking clients can use it from the test's
own thread; its control methods are thread-safe and in effect when they return.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_CHUNK = 65536
_TAIL = 255  # request bytes kept from the previous chunk, so a split marker still matches
_EOF = b""  # queued after the last chunk of a direction
_RESET = None  # queued in place of a reply the proxy drops
_Queue = asyncio.Queue[tuple[float, "bytes | None"]]


def _rst_on_close(sock: Any) -> None:
    """SO_LINGER with a zero timeout: closing ``sock`` sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclass
class _Armed:
    """``count`` more replies to drop: to requests containing ``marker`` (None: any)."""

    marker: bytes | None
    count: int


class _Conn:
    """One client connection and its upstream twin: two directions, each a reader task
    (stamps every chunk with the time it may leave) and a writer task (sends it then)."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.writers: list[asyncio.StreamWriter] = []  # client first, then upstream
        self.tasks: list[asyncio.Task[None]] = []
        self.done = asyncio.Event()  # set when the connection should be torn down
        self.rst = False  # tear down with a TCP RST to the client
        self.ended = 0  # directions whose end of stream was passed on
        self.drop_reply = False  # the next reply from the server is lost
        self.tail = b""

    async def run(self, sock: socket.socket) -> None:
        proxy = self.proxy
        if proxy._stopped or proxy._refuse:
            if not proxy._stopped:
                _rst_on_close(sock)
            sock.close()
            return
        try:
            client_reader, client = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        self.writers.append(client)
        try:
            try:
                up_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(*proxy.upstream), 10
                )
            except (OSError, asyncio.TimeoutError):
                self.rst = True  # as a server that is down would answer
                return
            self.writers.append(upstream)
            loop = asyncio.get_running_loop()
            for reader, writer, up in (
                (client_reader, upstream, True),
                (up_reader, client, False),
            ):
                queue: _Queue = asyncio.Queue(64)
                for coro in (self._read(reader, queue, up), self._write(queue, writer, up)):
                    task = loop.create_task(coro)
                    task.add_done_callback(self._task_done)
                    self.tasks.append(task)
            await self.done.wait()
        finally:
            await self._teardown()

    def forget(self, _: object) -> None:
        del self.proxy._conns[self]

    def close(self, rst: bool) -> None:
        self.rst = self.rst or rst
        self.done.set()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.done.set()

    async def _read(self, src: asyncio.StreamReader, queue: _Queue, up: bool) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0  # chunks never overtake each other, even when the latency drops
        while True:
            data = await src.read(_CHUNK)
            last = max(last, loop.time() + self.proxy._latency)
            if not data:
                await queue.put((last, _EOF))
                return
            if self.proxy._blackhole:
                continue
            if not up and self.drop_reply:
                self.drop_reply = False
                await queue.put((last, _RESET))
                return
            await queue.put((last, data))

    async def _write(self, queue: _Queue, dst: asyncio.StreamWriter, up: bool) -> None:
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        while True:
            when, data = await queue.get()
            if when > loop.time():
                await asyncio.sleep(when - loop.time())
            if data is _RESET:
                proxy.replies_dropped += 1
                self.close(rst=True)
                return
            if data == _EOF:
                # Half-close: pass the end of stream on; the other direction goes on
                # until its own end, then the connection closes.
                if dst.can_write_eof():
                    dst.write_eof()
                self.ended += 1
                if self.ended == 2:
                    self.done.set()
                return
            if proxy._blackhole:  # checked again: the chunk may have waited out a delay
                continue
            if up:
                proxy._note_request(self, data)
            if up:  # counted first: a client may see the data before this task goes on
                proxy.bytes_up += len(data)
            else:
                proxy.bytes_down += len(data)
            dst.write(data)
            await dst.drain()

    async def _teardown(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.rst:
            with contextlib.suppress(OSError):  # already closed by the client itself
                _rst_on_close(self.writers[0].get_extra_info("socket"))
        for writer in self.writers:
            if self.ended == 2 and not self.rst:
                writer.close()
            else:
                writer.transport.abort()
        for writer in self.writers:
            try:
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (asyncio.TimeoutError, OSError):
                writer.transport.abort()  # a peer that never reads what is left


class FaultProxy:
    """Forward 127.0.0.1:``port`` to ``upstream_host:upstream_port``, with faults on demand.

    .. code-block:: python

        with FaultProxy("127.0.0.1", server.port) as proxy:
            client = redis.Redis(port=proxy.port, socket_timeout=0.5)
            proxy.blackhole()  # client.ping() now times out
            proxy.heal()

    Faults that last until :meth:`heal`: :meth:`latency`, :meth:`blackhole`,
    :meth:`refuse`; one-shot: :meth:`reset`, :meth:`drop_reply_to`,
    :meth:`drop_next_reply`. The end of a connection (FIN) is passed on even in a black
    hole: only data is swallowed.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.connections_accepted = 0
        self.bytes_up = 0  # forwarded client -> server
        self.bytes_down = 0  # forwarded server -> client
        self.replies_dropped = 0
        self._latency = 0.0
        self._blackhole = False
        self._refuse = False
        self._armed: list[_Armed] = []
        self._conns: dict[_Conn, asyncio.Task[None]] = {}
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._stopped = False
        started: concurrent.futures.Future[int] = concurrent.futures.Future()

        def main() -> None:
            try:
                self._loop.run_until_complete(self._serve(started))
            finally:
                self._loop.close()

        self._thread = threading.Thread(
            target=main, name=f"fault-proxy->{upstream_host}:{upstream_port}", daemon=True
        )
        self._thread.start()
        self.port = started.result(30)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def url(self, upstream_url: str) -> str:
        """``upstream_url`` (``redis://``, ``postgresql://``, ...) aimed at the proxy."""
        parts = urlsplit(upstream_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # -- control (any thread) ---------------------------------------------------------

    def latency(self, seconds: float) -> None:
        """Hold every chunk, both ways, ``seconds`` before passing it on (order kept)."""
        if seconds < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {seconds!r}")
        self._control(lambda: setattr(self, "_latency", float(seconds)))

    def blackhole(self) -> None:
        """Swallow all data both ways; connections stay open and new ones are accepted."""
        self._control(lambda: setattr(self, "_blackhole", True))

    def refuse(self, on: bool = True) -> None:
        """While on, reset every new connection at once."""
        self._control(lambda: setattr(self, "_refuse", on))

    def drop_reply_to(self, marker: bytes, count: int = 1) -> None:
        """Lose the reply to the next ``count`` requests containing ``marker``: the
        request reaches the server, and the client's connection is reset instead of
        answered. The reply is the next data the server sends on that connection: the
        request's own for clients that wait for each reply before the next request."""
        if not marker or count < 1:
            raise ValueError("drop_reply_to needs a non-empty marker and a count >= 1")
        self._control(lambda: self._armed.append(_Armed(bytes(marker), count)))

    def drop_next_reply(self) -> None:
        """Lose the reply to the next request forwarded on any connection."""
        self._control(lambda: self._armed.append(_Armed(None, 1)))

    def reset(self) -> None:
        """Reset every current connection (RST to the client, close to the server)."""
        self._control(self._close_all, rst=True)

    def heal(self) -> None:
        """Plain forwarding again; data swallowed meanwhile is not replayed."""

        def heal() -> None:
            self._latency, self._blackhole, self._refuse = 0.0, False, False
            self._armed.clear()
            for conn in self._conns:
                conn.drop_reply = False

        self._control(heal)

    def stop(self) -> None:
        """Close every connection and the listener, and end the loop thread."""
        if self._stopped:
            return
        self._stopped = True
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FaultProxy(127.0.0.1:{self.port} -> {self.upstream[0]}:{self.upstream[1]})"

    # -- inside the loop thread ---------------------------------------------------------

    def _control(self, action: Callable[..., Any], **kwargs: Any) -> None:
        if self._stopped:
            raise RuntimeError(f"{self!r} is stopped")

        async def run() -> None:
            done = action(**kwargs)
            if asyncio.iscoroutine(done):
                await done

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    async def _serve(self, started: concurrent.futures.Future[int]) -> None:
        self._stopping = asyncio.Event()
        try:
            listener = socket.create_server(("127.0.0.1", 0))
        except OSError as exc:
            started.set_exception(exc)
            return
        with listener:
            listener.setblocking(False)
            accepting = asyncio.get_running_loop().create_task(self._accept(listener))
            started.set_result(int(listener.getsockname()[1]))
            await self._stopping.wait()
            accepting.cancel()
            await asyncio.gather(accepting, return_exceptions=True)
        await self._close_all(rst=False)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(listener)
            self.connections_accepted += 1
            conn = _Conn(self)
            task = self._conns[conn] = loop.create_task(conn.run(sock))
            task.add_done_callback(conn.forget)

    async def _close_all(self, rst: bool) -> None:
        conns = dict(self._conns)
        for conn in conns:
            conn.close(rst)
        await asyncio.gather(*conns.values(), return_exceptions=True)

    def _note_request(self, conn: _Conn, data: bytes) -> None:
        """Arm ``conn`` to lose its next reply if ``data`` is a request to drop one for."""
        window = conn.tail + data
        conn.tail = window[-_TAIL:]
        for armed in self._armed:
            # Only a marker ending in the new data counts: the tail matched already.
            start = max(0, len(window) - len(data) - len(armed.marker or b"") + 1)
            if armed.marker is None or armed.marker in window[start:]:
                armed.count -= 1
                if armed.count == 0:
                    self._armed.remove(armed)
                conn.drop_reply = True
                return


__all__ = ["FaultProxy"]
