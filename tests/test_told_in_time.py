"""A holder is told its lease is lost no later than the lease's local deadline, whatever
the store is doing: here the server is frozen (SIGSTOP), so every renewal hangs until
the client's own socket timeout, long after the lease ran out."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from remotelock import LockLost, RemoteLock
from remotelock.stores import store_from_url
from tests.helpers.crossproc import ROOT
from tests.helpers.told import LATE, told_in_time
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

TTL = 1.0


class Frozen:
    """A private server, and how to freeze it."""

    def __init__(self, server: RedisServer | PostgresServer, url: str) -> None:
        self.server = server
        self.url = url


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])  # fmt: skip
def frozen(request: pytest.FixtureRequest) -> Frozen:
    if request.param == "redis":
        server: Any = request.getfixturevalue("private_redis")
        return Frozen(server, server.url)
    server = request.getfixturevalue("private_postgres")
    return Frozen(server, f"{server.url}?timeout=5")


def test_lost_at_the_deadline_while_the_server_hangs(frozen: Frozen) -> None:
    store = store_from_url(frozen.url)
    told_in_time(store, silence=frozen.server.freeze, restore=frozen.server.thaw)


async def test_async_lost_at_the_deadline_while_the_server_hangs(frozen: Frozen) -> None:
    lock = RemoteLock("frozen", store=store_from_url(frozen.url), ttl=TTL)
    lease = await lock.aacquire()
    await asyncio.sleep(0.5)
    frozen.server.freeze()
    try:
        frozen_at = time.monotonic()
        for _ in range(int((TTL + 5) / 0.01)):
            if lease.lost:
                break
            await asyncio.sleep(0.01)
        assert lease.lost
        assert time.monotonic() - frozen_at < TTL + LATE
        assert lease.remaining() == 0
    finally:
        frozen.server.thaw()
    with pytest.raises(LockLost):
        await lock.afinish(lease, raised=False)


TRAP = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    out.with_suffix(".term").write_text(repr(time.monotonic()))
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
out.write_text("ready")
time.sleep(60)
"""


def test_run_stops_its_command_by_the_deadline(private_redis: RedisServer, tmp_path: Path) -> None:
    marker = tmp_path / "cmd"
    proc = subprocess.Popen(
        [sys.executable, "-m", "remotelock", "run", "job", "--url", private_redis.url,
         "--ttl", "3", "--", sys.executable, "-c", TRAP, str(marker)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the command did not start"
        time.sleep(1.2)  # its first renewal is done
        private_redis.freeze()
        frozen_at = time.monotonic()
        _, err = proc.communicate(timeout=30)
    finally:
        private_redis.thaw()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 79, err
    stopped_at = float(marker.with_suffix(".term").read_text())
    assert stopped_at - frozen_at < 3.0 + LATE, err
