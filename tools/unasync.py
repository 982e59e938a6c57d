"""Write the sync side of remotelock from its async source, so each behaviour is written once.

A module whose sync and async forms differ only in ``async``/``await`` and a few names is
kept in its async form; this tool derives the sync module from it by plain text rules
(drop ``async``/``await``, rename the names in :data:`NAMES` and the pair's own map),
then formats it with ruff. The generated file starts with a "do not edit" line naming
its source. Code that really differs between the two worlds (a thread against a task, a
connection per loop) lives in hand-written modules with the same method names, which the
rename maps one onto the other.

A line that ends with ``# async only`` is left out of the sync module.

    python tools/unasync.py          # regenerate every sync module
    python tools/unasync.py --check  # fail if one is out of date (./dev.sh lint runs it)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Pair(NamedTuple):
    """An async source, the sync module made from it, and the names that differ."""

    source: str
    target: str
    names: dict[str, str]


NAMES: dict[str, str] = {
    "AsyncIterator": "Iterator",
    "AsyncGenerator": "Generator",
    "AsyncIterable": "Iterable",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "aclose": "close",
    "asyncio.sleep": "time.sleep",
}
"""Renames every pair shares."""

_POSTGRES = "remotelock/stores/postgres/"
_POSTGRES_NAMES: dict[str, str] = {
    ".connections_aio": ".connections",
    ".listener_aio": ".listener",
    ".permits_aio": ".permits",
    ".queries_aio": ".queries",
    ".readers_aio": ".readers",
    "AsyncConnected": "Connected",
    "AsyncListener": "Listener",
    "AsyncPostgresPermits": "PostgresPermits",
    "AsyncPostgresReaders": "PostgresReaders",
    "AsyncPostgresStore": "PostgresStore",
    "psycopg.AsyncConnection": "psycopg.Connection",
    "psycopg_pool.AsyncConnectionPool": "psycopg_pool.ConnectionPool",
}
"""The PostgreSQL store's names, async to sync: its hand-written sides (``connections``
and ``listener``, each with an ``_aio`` twin), its generated modules, and the psycopg
classes its docstrings name."""

_REDIS = "remotelock/stores/redis/"
_REDIS_NAMES: dict[str, str] = {
    ".connect_aio": ".connect",
    ".permits_aio": ".permits",
    ".readers_aio": ".readers",
    ".tasks": ".threads",
    "AsyncCheck": "Check",
    "AsyncClients": "Clients",
    "AsyncDoorbell": "Doorbell",
    "AsyncRedisPermits": "RedisPermits",
    "AsyncRedisReaders": "RedisReaders",
    "AsyncRedisStore": "RedisStore",
    "AsyncRefresh": "Refresh",
    "TaskReader": "ThreadReader",
    "TaskWaiter": "ThreadWaiter",
    "client.aclose": "client.close",
    "pubsub.aclose": "pubsub.close",
    "redis.asyncio": "redis",
    "self._clients.aclose": "self._clients.close",
}
"""The Redis store's names, async to sync: its hand-written sides (``connect_aio`` and
``tasks``, against ``connect`` and ``threads``), its generated modules, and redis-py's
package. Names after a dot are never renamed, so the ``aclose()`` calls on an object
are named whole."""

PAIRS: tuple[Pair, ...] = (
    Pair(_POSTGRES + "aio.py", _POSTGRES + "store.py", _POSTGRES_NAMES),
    Pair(_POSTGRES + "permits_aio.py", _POSTGRES + "permits.py", _POSTGRES_NAMES),
    Pair(_POSTGRES + "queries_aio.py", _POSTGRES + "queries.py", _POSTGRES_NAMES),
    Pair(_POSTGRES + "readers_aio.py", _POSTGRES + "readers.py", _POSTGRES_NAMES),
    Pair(_REDIS + "aio.py", _REDIS + "store.py", _REDIS_NAMES),
    Pair(_REDIS + "permits_aio.py", _REDIS + "permits.py", _REDIS_NAMES),
    Pair(_REDIS + "readers_aio.py", _REDIS + "readers.py", _REDIS_NAMES),
    Pair(_REDIS + "doorbell_aio.py", _REDIS + "doorbell.py", _REDIS_NAMES),
)
"""Every generated module; each pair adds its own names to :data:`NAMES`."""

HEADER = (
    "# Generated from {source} by tools/unasync.py.\n"
    "# Do not edit: edit the source, then run the tool.\n"
)
_KEYWORDS = (
    (re.compile(r"\basync (def|with|for)\b"), r"\1"),
    (re.compile(r"\bawait\s+"), ""),
)


def unasync(text: str, names: dict[str, str]) -> str:
    """``text`` (an async module) turned into its sync twin, before formatting."""
    lines = [line for line in text.splitlines(keepends=True) if not _async_only(line)]
    out = "".join(lines)
    for pattern, replacement in _KEYWORDS:
        out = pattern.sub(replacement, out)
    table = {**NAMES, **names}
    longest_first = sorted(table, key=len, reverse=True)
    rename = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, longest_first)) + r")\b")
    return rename.sub(lambda match: table[match.group(1)], out)


def _async_only(line: str) -> bool:
    return line.rstrip().endswith("# async only")


def render(pair: Pair) -> str:
    """The sync module for ``pair``, formatted as the project formats code."""
    source = (ROOT / pair.source).read_text()
    body = HEADER.format(source=pair.source) + unasync(source, pair.names)
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", pair.target, "-"],
        input=body,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    fixed = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--fix-only", "--quiet", "--select", "I,F401",
         "--stdin-filename", pair.target, "-"],
        input=formatted.stdout,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )  # fmt: skip
    return fixed.stdout or formatted.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale modules")
    args = parser.parse_args(argv)
    stale = []
    for pair in PAIRS:
        wanted = render(pair)
        target = ROOT / pair.target
        if target.exists() and target.read_text() == wanted:
            continue
        stale.append(pair.target)
        if not args.check:
            target.write_text(wanted)
    if args.check and stale:
        print("out of date (run: python tools/unasync.py):", *stale, sep="\n  ")
        return 1
    for name in stale:
        print("wrote", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
