"""Every fault of FaultProxy, shown on real clients of real servers.

Timing checks assert lower bounds exactly (a delay the proxy adds cannot be shorter)
and upper bounds only loosely: other work shares the machine.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.faults.fixtures import ProxyFactory
from tests.faults.proxy import FaultProxy

if TYPE_CHECKING:
    import psycopg
    import redis

    from tests.servers.postgres import PostgresServer
    from tests.servers.redis import RedisServer

SLACK = 10.0  # a generous upper bound for anything that should take well under a second


def redis_client(proxy: FaultProxy, timeout: float = 2.0) -> redis.Redis:
    """A client through ``proxy`` that never retries: each fault shows as its error."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        port=proxy.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def pg_connect(url: str) -> psycopg.Connection[Any]:
    import psycopg

    return psycopg.connect(url, connect_timeout=2, autocommit=True)


def timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A loopback server echoing each chunk at once; it closes when its client does."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=serve, args=(conn,), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield listener.getsockname()[:2]
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    acceptor.join(5)
    for thread in threads:
        thread.join(5)


@pytest.fixture
def echo_proxy(fault_proxy: ProxyFactory, echo_server: tuple[str, int]) -> FaultProxy:
    return fault_proxy(*echo_server)


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=SLACK)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_url_points_at_the_proxy(echo_proxy: FaultProxy) -> None:
    port = echo_proxy.port
    assert echo_proxy.address == ("127.0.0.1", port)
    assert echo_proxy.url("redis://db.internal:6379/2?socket_timeout=1") == (
        f"redis://127.0.0.1:{port}/2?socket_timeout=1"
    )
    assert echo_proxy.url("postgresql://app:secret@db:5432/app?timeout=1") == (
        f"postgresql://app:secret@127.0.0.1:{port}/app?timeout=1"
    )


def test_forwards_and_counts(echo_proxy: FaultProxy) -> None:
    with connect(echo_proxy) as sock:
        sock.sendall(b"hello")
        assert sock.recv(100) == b"hello"
    assert echo_proxy.connections_accepted == 1
    assert (echo_proxy.bytes_up, echo_proxy.bytes_down) == (5, 5)


def test_half_close_passes_the_end_of_stream_on(echo_proxy: FaultProxy) -> None:
    with connect(echo_proxy) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)  # the reply must still come back
        received = b""
        while chunk := sock.recv(100):
            received += chunk
    assert received == b"last words"


def test_marker_split_across_chunks_still_drops_the_reply(echo_proxy: FaultProxy) -> None:
    echo_proxy.drop_reply_to(b"MARK")
    with connect(echo_proxy) as sock:
        sock.sendall(b"hello")
        assert sock.recv(100) == b"hello"  # no marker: answered
        sock.sendall(b"MA")
        assert sock.recv(100) == b"MA"  # half a marker: answered
        sock.sendall(b"RK")
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
    assert echo_proxy.replies_dropped == 1
    with connect(echo_proxy) as sock:  # the drop was used up
        sock.sendall(b"MARK")
        assert sock.recv(100) == b"MARK"


def test_stop_closes_everything(echo_proxy: FaultProxy) -> None:
    sock = connect(echo_proxy)
    sock.sendall(b"accepted?")
    assert sock.recv(100) == b"accepted?"
    echo_proxy.stop()
    with sock:
        assert sock.recv(100) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(echo_proxy.address, timeout=SLACK).close()
    assert not echo_proxy._thread.is_alive()
    with pytest.raises(RuntimeError, match="stopped"):
        echo_proxy.blackhole()


# -- Redis ------------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_ping(redis_proxy: FaultProxy) -> None:
    client = redis_client(redis_proxy)
    assert client.ping() is True
    client.close()
    assert redis_proxy.connections_accepted == 1
    assert redis_proxy.bytes_up > 0
    assert redis_proxy.bytes_down > 0


@pytest.mark.redis
def test_redis_latency_delays_both_ways_in_order(redis_proxy: FaultProxy) -> None:
    client = redis_client(redis_proxy, timeout=SLACK)
    client.ping()  # connected before the delay starts
    redis_proxy.latency(0.25)
    assert 0.5 <= timed(client.ping) < SLACK
    key = f"faults:{uuid.uuid4().hex}"
    pipe = client.pipeline(transaction=False)
    for _ in range(50):
        pipe.incr(key)
    assert pipe.execute() == list(range(1, 51))
    redis_proxy.heal()
    assert timed(client.ping) < 0.5
    client.close()


@pytest.mark.redis
def test_redis_blackhole_times_out_until_healed(redis_proxy: FaultProxy) -> None:
    import redis

    client = redis_client(redis_proxy, timeout=0.5)
    client.ping()
    redis_proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        client.ping()
    assert 0.5 <= time.monotonic() - started < SLACK
    fresh = redis_client(redis_proxy, timeout=0.5)  # accepted, then silent
    with pytest.raises(redis.TimeoutError):
        fresh.ping()
    redis_proxy.heal()
    assert client.ping() is True
    assert fresh.ping() is True
    client.close()
    fresh.close()


@pytest.mark.redis
def test_redis_reset_breaks_a_request_in_flight(
    redis_proxy: FaultProxy, redis_server: RedisServer
) -> None:
    import redis

    client = redis_client(redis_proxy, timeout=SLACK)
    direct = redis.Redis(port=redis_server.port, socket_timeout=SLACK)
    errors: list[BaseException] = []

    def wait_for_nothing() -> None:
        try:
            client.blpop([f"faults:{uuid.uuid4().hex}"], timeout=SLACK)
        except redis.RedisError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_nothing)
    waiter.start()
    deadline = time.monotonic() + SLACK
    while direct.info("clients")["blocked_clients"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    redis_proxy.reset()
    waiter.join(SLACK)
    assert len(errors) == 1
    assert isinstance(errors[0], redis.ConnectionError)
    assert redis_client(redis_proxy).ping() is True  # new connections work
    client.close()
    direct.close()


@pytest.mark.redis
def test_redis_reset_sends_rst(redis_proxy: FaultProxy) -> None:
    with connect(redis_proxy) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b"+PONG\r\n"
        redis_proxy.reset()
        with pytest.raises(ConnectionResetError):
            sock.recv(100)


@pytest.mark.redis
def test_redis_refuse(redis_proxy: FaultProxy) -> None:
    import redis

    redis_proxy.refuse(True)
    with pytest.raises(redis.ConnectionError):
        redis_client(redis_proxy).ping()
    redis_proxy.refuse(False)
    assert redis_client(redis_proxy).ping() is True


@pytest.mark.redis
def test_redis_dropped_reply_ran_on_the_server(
    redis_proxy: FaultProxy, redis_server: RedisServer
) -> None:
    import redis

    key = f"faults:{uuid.uuid4().hex}"
    client = redis_client(redis_proxy)
    client.ping()  # the connection handshake is behind us
    redis_proxy.drop_reply_to(b"SET")
    assert client.get(key) is None  # no marker: answered
    with pytest.raises(redis.ConnectionError):
        client.set(key, "written")
    direct = redis.Redis(port=redis_server.port, socket_timeout=SLACK)
    assert direct.get(key) == b"written"  # the request ran; only the reply was lost
    assert redis_proxy.replies_dropped == 1
    assert client.set(key, "again") is True  # one drop only
    direct.close()
    client.close()


@pytest.mark.redis
def test_redis_drop_next_reply(redis_proxy: FaultProxy, redis_server: RedisServer) -> None:
    import redis

    key = f"faults:{uuid.uuid4().hex}"
    client = redis_client(redis_proxy)
    client.ping()
    redis_proxy.drop_next_reply()
    with pytest.raises(redis.ConnectionError):
        client.incr(key)
    assert client.incr(key) == 2
    client.close()


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_select(postgres_proxy: FaultProxy, postgres_server: PostgresServer) -> None:
    with pg_connect(postgres_proxy.url(postgres_server.url)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert postgres_proxy.connections_accepted == 1


@pytest.mark.postgres
def test_postgres_latency(postgres_proxy: FaultProxy, postgres_server: PostgresServer) -> None:
    with pg_connect(postgres_proxy.url(postgres_server.url)) as conn:
        postgres_proxy.latency(0.25)
        assert 0.5 <= timed(lambda: conn.execute("SELECT 1").fetchone()) < SLACK


@pytest.mark.postgres
def test_postgres_blackhole(postgres_proxy: FaultProxy, postgres_server: PostgresServer) -> None:
    import psycopg

    url = postgres_proxy.url(postgres_server.url)
    postgres_proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        pg_connect(url)
    assert 2 <= time.monotonic() - started < 2 + SLACK  # libpq's connect_timeout
    postgres_proxy.heal()
    with pg_connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.postgres
def test_postgres_reset(postgres_proxy: FaultProxy, postgres_server: PostgresServer) -> None:
    import psycopg

    url = postgres_proxy.url(postgres_server.url)
    with pg_connect(url) as conn:
        conn.execute("SELECT 1")
        postgres_proxy.reset()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with pg_connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.postgres
def test_postgres_dropped_reply_ran_on_the_server(
    postgres_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    import psycopg
    from psycopg import sql

    table = sql.Identifier(f"faults_{uuid.uuid4().hex[:12]}")
    with pg_connect(postgres_server.url) as direct:
        direct.execute(sql.SQL("CREATE TABLE {} (n int)").format(table))
        try:
            with pg_connect(postgres_proxy.url(postgres_server.url)) as conn:
                postgres_proxy.drop_reply_to(b"INSERT INTO")
                conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
                with pytest.raises(psycopg.OperationalError):
                    conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
            row = direct.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
            assert row == (1,)
        finally:
            direct.execute(sql.SQL("DROP TABLE {}").format(table))
