"""What PostgresStore and its async twin share: options, URLs, errors, capabilities.

Free of I/O, so one copy serves both sides: the stores' steps are generated from one
async source, and the code that really differs between the sides (connections, the
listener) is hand-written per side, with what those twins have in common here and in
:mod:`remotelock.stores.postgres.waiting`.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import weakref
from typing import Any, Final, NamedTuple, Protocol
from urllib.parse import parse_qsl, urlencode

import psycopg
from psycopg import conninfo as pgconninfo
from psycopg import pq

from ...errors import StoreConfigError, StoreError
from ..base import CROSS_HOST, CROSS_PROCESS, EXPIRY, FENCING, NOTIFY, TOKEN_CHECKED
from ..shared.redact import described, redact, secrets_in
from ..shared.translate import Translate
from . import sql as q

log = logging.getLogger("remotelock.stores.postgres")

CAPABILITIES: Final = frozenset(
    {CROSS_PROCESS, CROSS_HOST, NOTIFY, FENCING, TOKEN_CHECKED, EXPIRY}
)

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}

KEEPALIVES: Final = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}
"""TCP keepalives for the listener: a connection that only waits would otherwise never
notice a peer that vanished without closing it."""


class Options(NamedTuple):
    """remotelock's own options (everything else in a URL goes to libpq)."""

    table: str = "remotelock_locks"
    schema: str | None = None
    timeout: float = 5.0
    pool_size: int = 4
    listen: bool = True
    listen_url: str | None = None
    retention: float | None = None
    """Seconds a released or expired lease row is kept (``None``: :func:`retention_of`)."""


RETENTION: Final = 60.0
"""The default retention: a retry of a release after a lost reply comes far sooner."""


def retention_of(options: Options) -> float:
    """How long released and expired rows stay: the option, or :data:`RETENTION`, or
    twice ``timeout`` if that is longer (no statement outlasts its timeout)."""
    if options.retention is not None:
        return options.retention
    return max(RETENTION, 2 * options.timeout)


def check_options(**given: Any) -> Options:
    """Validate the options; :class:`StoreConfigError` names the bad one."""
    options = Options(**given)
    if not isinstance(options.table, str) or not _IDENTIFIER.fullmatch(options.table):
        raise StoreConfigError(f"table must be a plain SQL identifier, got {options.table!r}")
    if options.schema is not None and (
        not isinstance(options.schema, str) or not _IDENTIFIER.fullmatch(options.schema)
    ):
        raise StoreConfigError(f"schema must be a plain SQL identifier, got {options.schema!r}")
    timeout = options.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise StoreConfigError(f"timeout must be a number of seconds, got {timeout!r}")
    if not 0.01 <= timeout <= 3600:
        raise StoreConfigError(f"timeout must be 0.01-3600 s, got {timeout!r}")
    size = options.pool_size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1000:
        raise StoreConfigError(f"pool_size must be an integer 1-1000, got {size!r}")
    if not isinstance(options.listen, bool):
        raise StoreConfigError(f"listen must be True or False, got {options.listen!r}")
    kept = options.retention
    if kept is not None:
        if isinstance(kept, bool) or not isinstance(kept, (int, float)):
            raise StoreConfigError(f"retention must be a number of seconds, got {kept!r}")
        if not 1 <= kept <= 30 * 86400:
            raise StoreConfigError(f"retention must be 1 s to 30 days, got {kept!r}")
        kept = float(kept)
    return options._replace(timeout=float(timeout), retention=kept)


def _convert(name: str, value: str, url: str) -> Any:
    if name in ("table", "schema", "listen_url"):
        return value
    if name == "listen":
        if value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise StoreConfigError(
            f"listen in {redact(url)!r} must be true or false, got {redact(value)!r}"
        )
    seconds = name in ("timeout", "retention")
    try:
        return float(value) if seconds else int(value)
    except ValueError:
        pass
    kind = "a number of seconds" if seconds else "a whole number"
    raise StoreConfigError(f"{name} in {redact(url)!r} must be {kind}, got {redact(value)!r}")


def parse_url(url: str, options: dict[str, Any]) -> tuple[str, Options]:
    """Split a URL (plus keyword options) into (libpq conninfo, our options).

    Keyword options override the query string, for libpq's parameters too. Every
    option must be remotelock's or libpq's, so a typo fails here, naming it.
    """
    base, _, query = url.partition("?")
    own: dict[str, Any] = {}
    kept = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in Options._fields:
            own[name] = _convert(name, value, url)
        elif name not in options:
            _check_query_option(name, value, url)
            kept.append((name, value))
    libpq = {name: options.pop(name) for name in list(options) if name not in Options._fields}
    for name in libpq:
        if name not in _libpq_keywords():
            raise _unknown(name, url)
    own.update(options)
    checked = check_options(**own)
    try:
        conninfo = pgconninfo.make_conninfo(f"{base}?{urlencode(kept)}" if kept else base)
        conninfo = pgconninfo.make_conninfo(conninfo, **libpq)
        pgconninfo.conninfo_to_dict(conninfo)  # validates parameter names
    except psycopg.Error as exc:
        problem = described(exc, hiding=secrets_in(url) | _secret_values(libpq))
    else:
        return conninfo, checked
    # Raised here, not from psycopg's error: libpq's message may echo parts of the URL.
    raise StoreConfigError(f"bad PostgreSQL URL {redact(url)!r}: {problem}")


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    """Every connection parameter this libpq knows (``PQconndefaults``)."""
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def _check_query_option(name: str, value: str, url: str) -> None:
    """``name`` must be a libpq parameter, or a URL alias libpq's URI parser takes
    (``ssl=true``); libpq itself answers, so no list of ours can drift from it."""
    if name in _libpq_keywords():
        return
    try:
        pgconninfo.conninfo_to_dict("postgresql://?" + urlencode([(name, value)]))
    except psycopg.Error:
        pass
    else:
        return
    raise _unknown(name, url)


def _unknown(name: str, url: str) -> StoreConfigError:
    import difflib  # only to suggest a fix for a mistyped option

    close = difflib.get_close_matches(name, [*_libpq_keywords(), *Options._fields], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return StoreConfigError(
        f"unknown PostgreSQL option {name!r} in {redact(url)!r}: neither remotelock's "
        f"({', '.join(Options._fields)}) nor a libpq connection parameter{hint}"
    )


def _secret_values(params: dict[str, Any]) -> set[str]:
    """Values of keyword options that are secrets (``password=...``), to hide them."""
    return secrets_in(" ".join(f"{name}={value}" for name, value in params.items()))


def not_a_connection(connection: object, expected: str) -> StoreConfigError:
    """The error for a ``connection`` argument of the wrong kind (a URL, most often)."""
    hint = "; for a URL use from_url(url), or conninfo=" if isinstance(connection, str) else ""
    return StoreConfigError(f"expected {expected}, got {redact(repr(connection))}{hint}")


def is_pool(connection: object) -> bool:
    """Whether ``connection`` is a pool (``psycopg_pool``'s, sync or async, or alike)."""
    return hasattr(connection, "getconn") and hasattr(connection, "putconn")


def stayed_busy(what: str, timeout: float) -> psycopg.OperationalError:
    """The error for a step that waited ``timeout`` for a connection and got none."""
    return psycopg.OperationalError(f"{what} stayed busy for {timeout:g} s")


def millis(seconds: float) -> int:
    """Whole milliseconds for a server setting, never 0 (which would mean no limit)."""
    return max(1, math.ceil(seconds * 1000))


def checked_conninfo(conninfo: str, what: str = "conninfo") -> str:
    """``conninfo`` itself, once libpq accepts it (else :class:`StoreConfigError`
    naming ``what``, raised in place of psycopg's error: its message may echo parts
    of the string, password included)."""
    if not isinstance(conninfo, str):
        raise StoreConfigError(f"{what} must be a str, got {type(conninfo).__name__}")
    try:
        pgconninfo.conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        problem = described(exc, hiding=secrets_in(conninfo))
    else:
        return conninfo
    raise StoreConfigError(f"bad PostgreSQL {what} {redact(conninfo)!r}: {problem}")


def server_conninfo(conninfo: str, timeout: float, *, listener: bool = False) -> str:
    """``conninfo`` plus what the store's own connections need.

    ``statement_timeout`` and ``lock_timeout`` travel as startup options, so they cost
    no round trip; ``connect_timeout`` (whole seconds, libpq's minimum is 2) and an
    ``application_name`` are added unless the URL sets them.
    """
    params = pgconninfo.conninfo_to_dict(conninfo)
    extra: dict[str, Any] = {}
    own = f"-c statement_timeout={millis(timeout)} -c lock_timeout={millis(timeout)}"
    extra["options"] = f"{params['options']} {own}" if params.get("options") else own
    if "connect_timeout" not in params:
        extra["connect_timeout"] = str(max(2, math.ceil(timeout)))
    if "application_name" not in params:
        extra["application_name"] = "remotelock"
    if listener:
        extra.update({k: v for k, v in KEEPALIVES.items() if k not in params})
    return pgconninfo.make_conninfo(conninfo, **extra)


def given_conninfo(info: Any) -> str:
    """A conninfo for a listener next to a connection (or pool) given to the store."""
    password = getattr(info, "password", None)
    dsn = str(info.dsn)
    return pgconninfo.make_conninfo(dsn, password=password) if password else dsn


# -- connections passed in, and os.fork() ---------------------------------------------

ORPHANED: list[object] = []
"""Connections inherited across ``os.fork()``: kept alive, never used or closed, since
closing one would end the parent's session on the shared socket."""


class ForkAware(Protocol):
    def forget_after_fork(self) -> None: ...


_IN_CHILD: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def forget_in_child(state: ForkAware) -> None:
    """Have ``state.forget_after_fork()`` run in a forked child: the sync side's
    connections and listener thread belong to the parent (the async side checks the
    process id as it looks up its event loop's state instead)."""
    _IN_CHILD.add(state)


def _after_fork_in_child() -> None:
    for state in list(_IN_CHILD):
        state.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Given:
    """What a connection or pool passed in is on either side: the caller's (never
    closed by the store), and unusable in a forked child (its session belongs to
    the parent)."""

    what = "connection"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.pid = os.getpid()

    def check_fork(self) -> None:
        """Refuse to serve in a forked child."""
        if self.pid != os.getpid():
            raise StoreError(
                f"a {self.what} given to a PostgreSQL store cannot be used after os.fork(); "
                "build the store from a URL, or in the process that uses it"
            )


# -- what both stores are built on -----------------------------------------------------


class Configured:
    """The validated options both PostgreSQL stores keep, and their statements.

    ``_conninfo`` is the conninfo the store was built from, or ``None`` for a store
    given a connection or pool.
    """

    table: str
    schema: str | None
    timeout: float
    pool_size: int
    listen: bool
    listen_url: str | None
    retention: float
    _conninfo: str | None
    _sql: q.Statements

    def _configure(self, connection: Any, conninfo: str | None, **given: Any) -> None:
        """Validate and keep the options; exactly one of ``connection`` and ``conninfo``."""
        options = check_options(**given)
        self.table, self.schema, self.timeout = options.table, options.schema, options.timeout
        self.pool_size, self.listen = options.pool_size, options.listen
        self.listen_url = options.listen_url
        self.retention = retention_of(options)
        self._sql = q.statements(self.schema, self.table)
        if (connection is None) == (conninfo is None):
            raise StoreConfigError("pass exactly one of a connection, a pool or conninfo=")
        if options.listen_url is not None:
            checked_conninfo(options.listen_url, "listen_url")
        self._conninfo = None if conninfo is None else checked_conninfo(conninfo)


# -- errors --------------------------------------------------------------------------


class translate(Translate):
    """psycopg errors become StoreErrors, raised from the original (one place per store).

    Connection refused or lost, statement and lock timeouts, an exhausted pool:
    :class:`StoreUnavailable`. Anything else from psycopg (a missing privilege, a
    malformed key): :class:`StoreError`.
    """

    __slots__ = ()
    unavailable = (psycopg.OperationalError, psycopg.InterfaceError)
    failed = (psycopg.Error,)


def is_broken(exc: BaseException, conn: Any) -> bool:
    """Whether ``exc`` means ``conn`` died under the statement (worth one retry).

    Timeouts are not: the connection survives them, and a retry would double the wait.
    """
    return (
        isinstance(exc, psycopg.OperationalError)
        and not isinstance(exc, (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable))
        and conn is not None
        and bool(conn.closed)
    )


__all__ = [
    "CAPABILITIES",
    "ORPHANED",
    "RETENTION",
    "Configured",
    "Given",
    "Options",
    "check_options",
    "checked_conninfo",
    "forget_in_child",
    "given_conninfo",
    "is_broken",
    "is_pool",
    "millis",
    "not_a_connection",
    "parse_url",
    "retention_of",
    "server_conninfo",
    "stayed_busy",
    "translate",
]
