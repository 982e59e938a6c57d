"""No password reaches a message, a chained exception, a log line or the command line.

Every bad configuration here carries a password; whatever fails, the password must
not show anywhere: the error's message and repr, its ``__cause__`` and
``__context__`` (recursively), the log records, the command line's stdout and stderr.
Bad configuration is a :class:`StoreConfigError` at construction, naming the option.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from remotelock import StoreConfigError, StoreError, StoreUnavailable, cli
from remotelock.stores import store_from_url
from remotelock.stores.memory import MemoryStore
from remotelock.stores.redis.aio import AsyncRedisStore
from remotelock.stores.redis.store import RedisStore
from remotelock.stores.shared.redact import redact, secrets_in
from remotelock.stores.sqlite.store import SQLiteStore
from remotelock.supervise import ExitStatus
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer, free_port

MARK = "s3cr3t"
"""In every spelling of every password below: raw, percent-encoded and decoded."""

AUTHS = {
    "plain": "app:s3cr3t-pw",
    "encoded": "app:s3cr3t%40pw",  # the password is "s3cr3t@pw"
    "no-user": ":s3cr3t-pw",
}
CONNINFO = "host=127.0.0.1 password=s3cr3t-pw bogus=1"

# URL templates and what the message must say. {auth} is user:password, {pw} the
# password alone, {port} a loopback port nothing listens on.
LISTEN_URL = f"postgresql://{{auth}}@127.0.0.1:{{port}}/db?listen_url={quote(CONNINFO)}"
BAD_URLS = [
    pytest.param("redis://{auth}@127.0.0.1:{port}/0?waiter_grace=soon", "waiter_grace",
                 id="redis-waiter_grace"),
    pytest.param("redis://{auth}@127.0.0.1:{port}/0?socket_timeout=abc", "socket_timeout",
                 id="redis-socket_timeout"),
    pytest.param("redis://{auth}@127.0.0.1:{port}/0?db=x", "'db'", id="redis-db-query"),
    pytest.param("redis://{auth}@127.0.0.1:{port}/abc", "database number", id="redis-db-path"),
    pytest.param("redis://{auth}@127.0.0.1:{port}/0?colour=blue", "'colour'", id="redis-unknown"),
    pytest.param("rediss://{auth}@127.0.0.1:{port}/0?socket_timout=1", "'socket_timout'",
                 id="redis-typo"),
    pytest.param("redis://{auth}@127.0.0.1:{port}/0?timeout=1", "'timeout'", id="redis-not-plain"),
    pytest.param("redis://{auth}@127.0.0.1:abc/0", "Port", id="redis-port"),
    pytest.param("redis://{auth}@[::1/0", "URL", id="redis-ipv6"),
    pytest.param("redis://127.0.0.1:{port}/0?password={pw}&colour=blue", "'colour'",
                 id="redis-query-password"),
    pytest.param("redis+sentinel://{auth}@127.0.0.1:{port}", "service name",
                 id="sentinel-service"),
    pytest.param("redis+sentinel://{auth}@127.0.0.1:{port}/main/x", "database number",
                 id="sentinel-db"),
    pytest.param("redis+cluster://{auth}@127.0.0.1:{port}?colour=blue", "'colour'",
                 id="cluster-unknown"),
    pytest.param("redsi://{auth}@127.0.0.1:{port}/0", "redsi", id="scheme-typo"),
    pytest.param("postgresql://{auth}@127.0.0.1:{port}/db?timeout=soon", "timeout",
                 id="pg-timeout"),
    pytest.param("postgresql://{auth}@127.0.0.1:{port}/db?listen=maybe", "listen", id="pg-listen"),
    pytest.param("postgresql://{auth}@127.0.0.1:{port}/db?pool_size=many", "pool_size",
                 id="pg-pool_size"),
    pytest.param("postgresql://{auth}@127.0.0.1:{port}/db?colour=blue", "'colour'",
                 id="pg-unknown"),
    pytest.param("postgres://{auth}@127.0.0.1:{port}/db?sslmod=require", "'sslmod'",
                 id="pg-typo"),
    pytest.param("postgresql://{auth}%zz@127.0.0.1:{port}/db", "percent-encoded",
                 id="pg-libpq-parse"),
    pytest.param("postgresql://{auth}@[::1/db", "URL", id="pg-ipv6"),
    pytest.param(LISTEN_URL, "listen_url", id="pg-listen_url"),
    pytest.param("postgresql://127.0.0.1:{port}/db?password={pw}&colour=blue", "'colour'",
                 id="pg-query-password"),
    pytest.param("sqlite://{auth}@localhost/locks.db", "no host", id="sqlite-host"),
    pytest.param("sqlite:///locks.db?password={pw}&colour=blue", "unknown sqlite:// option",
                 id="sqlite-unknown"),
    pytest.param("memory://{auth}@name?colour=blue", "'colour'", id="memory-unknown"),
]  # fmt: skip


def _classes(scheme: str) -> list[Any]:
    """The store classes whose ``from_url`` takes URLs of ``scheme``."""
    if scheme.startswith("redis") or scheme == "redsi":
        return [RedisStore, AsyncRedisStore]
    if scheme.startswith("postgres"):
        from remotelock.stores.postgres.aio import AsyncPostgresStore
        from remotelock.stores.postgres.store import PostgresStore

        return [PostgresStore, AsyncPostgresStore]
    return [SQLiteStore] if scheme == "sqlite" else [MemoryStore]


def _url(template: str, auth: str) -> str:
    return template.format(auth=auth, pw=auth.partition(":")[2], port=free_port())


def leaks(*texts: object) -> list[str]:
    """The texts that show a password."""
    return [str(text) for text in texts if MARK in str(text)]


def assert_hidden(exc: BaseException) -> None:
    """No password in ``exc``, nor in any exception chained to it."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        assert not leaks(current, repr(current), *current.args), current
        pending += [current.__cause__, current.__context__]


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    records = [record.getMessage() for record in caplog.records]
    assert not leaks(caplog.text, *records)


@pytest.fixture(autouse=True)
def _all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.DEBUG):
        yield
    assert_quiet(caplog)


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    """cli.main() configures the ``remotelock`` logger; other tests must not inherit that."""
    logger = logging.getLogger("remotelock")
    level, handlers = logger.level, list(logger.handlers)
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            logger.removeHandler(handler)
    logger.setLevel(level)


# -- construction ----------------------------------------------------------------------


@pytest.mark.parametrize("auth", list(AUTHS.values()), ids=list(AUTHS))
@pytest.mark.parametrize(("template", "says"), BAD_URLS)
def test_bad_urls_fail_at_construction_without_the_password(
    template: str, says: str, auth: str
) -> None:
    url = _url(template, auth)
    assert MARK in url
    with pytest.raises(StoreConfigError) as caught:
        store_from_url(url)
    assert says in str(caught.value)
    assert_hidden(caught.value)
    for cls in _classes(url.partition(":")[0]):
        with pytest.raises(StoreConfigError) as caught:
            cls.from_url(url)
        assert_hidden(caught.value)


@pytest.mark.parametrize(
    ("url", "options", "says"),
    [
        ("redis://app:s3cr3t-pw@127.0.0.1:{port}/0", {"colour": "blue"}, "'colour'"),
        ("redis://app:s3cr3t-pw@127.0.0.1:{port}/0", {"socket_timout": 1}, "'socket_timout'"),
        ("redis://app:s3cr3t-pw@127.0.0.1:{port}/0", {"connection_class": "x"}, "class"),
        ("redis://app:s3cr3t-pw@127.0.0.1:{port}/0", {"waiter_grace": "soon"}, "waiter_grace"),
        ("postgresql://app:s3cr3t-pw@127.0.0.1:{port}/db", {"colour": "blue"}, "'colour'"),
        ("postgresql://app:s3cr3t-pw@127.0.0.1:{port}/db", {"timeout": "soon"}, "timeout"),
        ("postgresql://app:s3cr3t-pw@127.0.0.1:{port}/db", {"listen_url": CONNINFO}, "listen_url"),
        ("sqlite:///locks.db?table=t", {"colour": "blue"}, "'colour'"),
        ("sqlite:///locks.db?table=t", {"busy_timeout": "soon"}, "busy_timeout"),
        ("memory://app:s3cr3t-pw@name", {"colour": "blue"}, "'colour'"),
    ],
)
def test_bad_keyword_options_fail_at_construction(
    url: str, options: dict[str, Any], says: str
) -> None:
    with pytest.raises(StoreConfigError, match=says) as caught:
        store_from_url(url.format(port=free_port()), **options)
    assert_hidden(caught.value)


def _constructors() -> list[Any]:
    from remotelock.stores.postgres.aio import AsyncPostgresStore
    from remotelock.stores.postgres.store import PostgresStore

    url = "postgresql://app:s3cr3t-pw@127.0.0.1:5432/db"
    unterminated = "host=h password='s3cr3t-pw"
    return [
        pytest.param(lambda: PostgresStore(conninfo=CONNINFO), "conninfo", id="conninfo"),
        pytest.param(lambda: AsyncPostgresStore(conninfo=CONNINFO), "conninfo",
                     id="conninfo-async"),
        pytest.param(lambda: PostgresStore(conninfo=unterminated), "quoted", id="unterminated"),
        pytest.param(lambda: PostgresStore(conninfo="host=h", listen_url=CONNINFO), "listen_url",
                     id="listen_url"),
        pytest.param(lambda: PostgresStore(url), "from_url", id="url-as-connection"),
        pytest.param(lambda: AsyncPostgresStore(url), "from_url", id="url-as-connection-async"),
        pytest.param(lambda: RedisStore("redis://app:s3cr3t-pw@h/0"), "from_url",
                     id="redis-url-as-client"),
        pytest.param(lambda: AsyncRedisStore("redis://:s3cr3t-pw@h"), "from_url",
                     id="redis-url-as-client-async"),
    ]  # fmt: skip


@pytest.mark.parametrize(("build", "says"), _constructors())
def test_bad_constructor_arguments(build: Callable[[], object], says: str) -> None:
    with pytest.raises(StoreConfigError, match=says) as caught:
        build()
    assert_hidden(caught.value)


# -- unreachable servers ---------------------------------------------------------------

DOWN_URLS = [
    "redis://app:s3cr3t-pw@127.0.0.1:{port}/0?socket_connect_timeout=0.5&socket_timeout=0.5",
    "postgresql://app:s3cr3t%40pw@127.0.0.1:{port}/db?timeout=0.5&listen=false",
]


@pytest.mark.parametrize("template", DOWN_URLS, ids=["redis", "postgres"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_unreachable_servers(template: str, asynchronous: bool) -> None:
    store: Any = store_from_url(template.format(port=free_port()))
    big = "k" * 1_000_000
    with pytest.raises(StoreUnavailable) as caught:
        _acquire(store, big, asynchronous)
    assert_hidden(caught.value)
    message = str(caught.value)
    assert len(message) < 2000, "a long key is quoted by its start and size only"
    assert "1000000 bytes" in message
    store.close()


def _acquire(store: Any, key: str, asynchronous: bool) -> None:
    if asynchronous:
        asyncio.run(_acquire_async(store.as_async(), key))
    else:
        store.acquire(key, "token", 5)


async def _acquire_async(store: Any, key: str) -> None:
    try:
        await store.acquire(key, "token", 5)
    finally:
        await store.aclose()


def test_unreachable_redis_cluster_is_store_unavailable() -> None:
    # A Redis Cluster client connects as it is built.
    port = free_port()
    url = f"redis+cluster://:s3cr3t-pw@127.0.0.1:{port}?socket_connect_timeout=0.5"
    with pytest.raises(StoreUnavailable) as caught:
        store_from_url(url)
    assert_hidden(caught.value)


# -- real servers ------------------------------------------------------------------------


@pytest.mark.redis
def test_wrong_redis_credentials(redis_server: RedisServer) -> None:
    store = store_from_url(f"redis://nobody:s3cr3t-pw@127.0.0.1:{redis_server.port}/0")
    assert isinstance(store, RedisStore)
    with pytest.raises(StoreError) as caught:
        store.acquire("k" * 100_000, "token", 5)
    assert_hidden(caught.value)
    assert len(str(caught.value)) < 2000
    store.close()


@pytest.mark.redis
def test_valid_redis_options_reach_the_client(redis_server: RedisServer) -> None:
    url = (
        f"redis://127.0.0.1:{redis_server.port}/1?socket_keepalive=true"
        "&health_check_interval=5&client_name=remotelock-test&prefix=secrets"
    )
    store = store_from_url(url, socket_timeout=2)
    assert isinstance(store, RedisStore)
    settings = store.client.connection_pool.connection_kwargs
    assert settings["socket_keepalive"] is True
    assert settings["health_check_interval"] == 5
    assert settings["socket_timeout"] == 2
    assert settings["db"] == 1
    assert store.acquire("k", "token", 5) is not None
    assert store.release("k", "token")
    store.close()


@pytest.mark.postgres
def test_missing_postgres_database(postgres_server: PostgresServer) -> None:
    url = f"postgresql://postgres:s3cr3t-pw@127.0.0.1:{postgres_server.port}/no_such_db"
    store: Any = store_from_url(f"{url}?timeout=2")
    with pytest.raises(StoreUnavailable, match="no_such_db") as caught:
        store.acquire("k", "token", 5)
    assert_hidden(caught.value)
    store.close()


@pytest.mark.postgres
def test_bad_libpq_parameter_value(postgres_server: PostgresServer) -> None:
    # libpq checks values only when it connects: the error comes then, still redacted.
    url = f"postgresql://postgres:s3cr3t-pw@127.0.0.1:{postgres_server.port}/postgres"
    store: Any = store_from_url(f"{url}?sslmode=bogus&timeout=2")
    with pytest.raises(StoreError, match="sslmode") as caught:
        store.acquire("k", "token", 5)
    assert_hidden(caught.value)
    store.close()


# -- the command line --------------------------------------------------------------------

CLI_BAD = [case for case in BAD_URLS if not str(case.id).startswith("memory")]
COMMANDS = {
    "status": ["status", "k"],
    "release": ["release", "k", "--force"],
    "run": ["run", "k", "--timeout", "0"],
}


def _main(command: list[str], url: str, verbose: bool) -> int:
    args = [*(["-v"] if verbose else []), *command, "--url", url]
    if command[0] == "run":
        args += ["--", sys.executable, "-c", "pass"]
    try:
        return cli.main(args)
    except SystemExit as exited:
        code = exited.code
    assert isinstance(code, int)
    return code


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
@pytest.mark.parametrize("command", list(COMMANDS.values()), ids=list(COMMANDS))
@pytest.mark.parametrize(("template", "says"), CLI_BAD)
def test_cli_bad_configuration_exits_2_without_the_password(
    template: str,
    says: str,
    command: list[str],
    verbose: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = _url(template, AUTHS["encoded" if "pg" in template else "plain"])
    assert _main(command, url, verbose) == ExitStatus.USAGE
    out, err = capsys.readouterr()
    assert not leaks(out, err)
    assert out == ""
    lines = err.splitlines()
    if verbose:  # debug lines may come first
        lines = [line for line in lines if line.startswith("remotelock: error: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("remotelock: error: ")
    assert says in lines[0]


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
@pytest.mark.parametrize("command", list(COMMANDS.values()), ids=list(COMMANDS))
@pytest.mark.parametrize(
    "template",
    [*DOWN_URLS, "redis+cluster://:s3cr3t-pw@127.0.0.1:{port}?socket_connect_timeout=0.5"],
    ids=["redis", "postgres", "cluster"],
)
def test_cli_unreachable_store_exits_69_without_the_password(
    template: str, command: list[str], verbose: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(command, template.format(port=free_port()), verbose) == (
        ExitStatus.STORE_UNAVAILABLE
    )
    out, err = capsys.readouterr()
    assert not leaks(out, err)
    assert out == ""
    if verbose:  # the long formatter, after the debug lines
        assert "ERROR store unavailable: " in err.splitlines()[-1], err
    else:
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("remotelock: error: store unavailable: ")


@pytest.mark.usefixtures("_restore_logging")
def test_cli_bad_remotelock_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REMOTELOCK_URL", f"redis://app:s3cr3t-pw@127.0.0.1:{free_port()}/x")
    assert _main(["status", "k"], "", verbose=True) == ExitStatus.USAGE
    out, err = capsys.readouterr()
    assert not leaks(out, err)
    assert "database number" in err


@pytest.mark.usefixtures("_restore_logging")
def test_cli_unrecognised_arguments_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "k", "--ulr", "redis://app:s3cr3t-pw@h/0"])
    assert exited.value.code == ExitStatus.USAGE
    out, err = capsys.readouterr()
    assert not leaks(out, err)
    assert "--ulr" in err


# -- the helper itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("redis://app:s3cr3t-pw@h:6379/0", "redis://app:***@h:6379/0"),
        ("redis://:s3cr3t%40pw@h/0", "redis://:***@h/0"),
        ("redis://app:s3cr3t@pw@h/0", "redis://app:***@h/0"),
        ("redis+sentinel://:s3cr3t-pw@a:1,b:2/main", "redis+sentinel://:***@a:1,b:2/main"),
        ("redis+cluster://a:7000,b:7001", "redis+cluster://a:7000,b:7001"),
        ("redis://app@h:6379/0", "redis://app@h:6379/0"),
        ("redis://h/0?password=s3cr3t-pw&db=1", "redis://h/0?password=***&db=1"),
        ("host=h password=s3cr3t-pw dbname=d", "host=h password=*** dbname=d"),
        ("host=h password = 's3cr3t \\' pw' dbname=d", "host=h password = *** dbname=d"),
        ("sslpassword=s3cr3t-pw", "sslpassword=***"),
        ("{'password': 's3cr3t-pw'}", "{'password': ***}"),
        ("'postgresql://u:s3cr3t-pw%zz@h/db': token \"s3cr3t-pw%zz\"",
         "'postgresql://u:***@h/db': token \"***\""),
        ("sqlite:////tmp/locks.db?table=t", "sqlite:////tmp/locks.db?table=t"),
    ],
)  # fmt: skip
def test_redact(text: str, redacted: str) -> None:
    assert redact(text) == redacted
    assert MARK not in redacted


def test_redact_hides_what_a_driver_echoes() -> None:
    url = "postgresql://u:s3cr3t%40pw@h/db"
    assert secrets_in(url) >= {"s3cr3t%40pw", "s3cr3t@pw"}
    assert redact('token "s3cr3t@pw" and s3cr3t%40pw', hiding=secrets_in(url)) == (
        'token "***" and ***'
    )
