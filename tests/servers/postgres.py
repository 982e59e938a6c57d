"""Throwaway PostgreSQL servers for the tests (and the benchmarks).

The binaries (``initdb``, ``postgres``) come from the machine's PATH if it has them,
else from the ``pgserver`` wheel, which ships a full PostgreSQL build. Set
``REMOTELOCK_TEST_PG=pgserver`` (or ``=path``) to force one source. Both run the same
way here rather than through ``pgserver.get_server``, which only offers a Unix socket,
default settings and no stop/restart, and the failure tests need all three.

Each server gets its own temporary directory, a free loopback port (plus a Unix socket
in that directory), ``fsync=off`` and room for 200 connections. ``initdb`` refuses
to run as root, so under root the server runs as the ``postgres`` user if there is
one, else ``nobody``; its directory lives in the system temp dir (pytest's own is
readable by root only). Servers are stopped and their directories removed at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.servers.redis import free_port, wait_until_ready

SOURCE_VARIABLE = "REMOTELOCK_TEST_PG"


def wheel_bindir() -> Path | None:
    """The ``bin`` directory inside the pgserver wheel (found without importing it)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if os.access(bindir / "postgres", os.X_OK) else None


def path_bindir() -> Path | None:
    """The directory of ``initdb`` on PATH, if ``postgres`` sits next to it."""
    found = shutil.which("initdb")
    if not found:
        return None
    bindir = Path(found).resolve().parent
    return bindir if os.access(bindir / "postgres", os.X_OK) else None


def find_bindir() -> tuple[Path | None, str]:
    """(binaries, where they come from); ``None`` and the reason if there are none."""
    wanted = os.environ.get(SOURCE_VARIABLE, "")
    if wanted not in ("", "path", "pgserver"):
        return None, f"{SOURCE_VARIABLE} must be 'path' or 'pgserver', not {wanted!r}"
    if wanted in ("", "path") and (found := path_bindir()) is not None:
        return found, "PATH"
    if wanted in ("", "pgserver") and (found := wheel_bindir()) is not None:
        return found, "the pgserver wheel"
    return None, f"no initdb/postgres ({wanted or 'PATH or the pgserver wheel'})"


def _server_user() -> dict[str, Any]:
    """``subprocess`` arguments that drop root privileges (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root, and there is no 'postgres' or 'nobody' user")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (PostgreSQL backends call setsid, so a
    process group does not reach them)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


class PostgresServer:
    """One PostgreSQL server; can be stopped, restarted (same port) and frozen."""

    def __init__(self, bindir: Path, max_connections: int = 200) -> None:
        self.bindir = bindir
        self.max_connections = max_connections
        self.as_user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="remotelock-pg-"))
        if self.as_user:
            os.chown(self.root, self.as_user["user"], self.as_user["group"])
        self.data = self.root / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        if not self.data.exists():
            subprocess.run(
                [self.bindir / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--no-sync", "--no-instructions"],
                check=True, capture_output=True, **self.as_user,
            )  # fmt: skip
        self._log = open(self.root / "server.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [self.bindir / "postgres", "-D", self.data, "-p", str(self.port),
             "-h", "127.0.0.1", "-k", self.root, "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", f"max_connections={self.max_connections}", "-c", "shared_buffers=32MB"],
            stdout=self._log, stderr=self._log, start_new_session=True, **self.as_user,
        )  # fmt: skip
        if wait_until_ready(self.proc, self.ready, "postgres", self.root / "server.log", 30):
            return self
        self.stop()
        raise RuntimeError("PostgreSQL did not accept connections within 30 s")

    def ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def freeze(self) -> None:
        """SIGSTOP the server and every backend: connections stay open, nothing answers."""
        self._signal_all(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)
        self.frozen = False

    def _signal_all(self, signum: int) -> None:
        assert self.proc is not None
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError):  # a backend that just exited
                os.kill(pid, signum)

    def stop(self) -> None:
        """Fast shutdown: clients see their connections terminated at once."""
        if self.proc is not None and self.proc.poll() is None:
            if self.frozen:
                self.thaw()
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            if self.proc is not None:  # stop failed half-way: never leave a server behind
                self.proc.kill()
            shutil.rmtree(self.root, ignore_errors=True)


def _bindir() -> Path:
    bindir, where = find_bindir()
    if bindir is None:
        from tests.conftest import unavailable

        unavailable("PostgreSQL", where)
    assert bindir is not None
    return bindir


@contextlib.contextmanager
def _running() -> Iterator[PostgresServer]:
    server = PostgresServer(_bindir())
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One shared server for the whole session (tests use tables of their own)."""
    with _running() as server:
        yield server


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own, for tests that stop, restart or freeze it."""
    with _running() as server:
        yield server
