"""AWS Lambda fit: waits and leases bounded by the invocation; nothing outlives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from remotelock import Lease, LockTimeout, RemoteLock, remote_locked
from remotelock.awslambda import find_context
from remotelock.stores import MemoryStore, RedisStore, SQLiteStore
from tests.helpers.crossproc import ROOT
from tests.helpers.elsewhere import in_thread
from tests.helpers.lambda_context import FakeContext
from tests.servers.redis import RedisServer


def test_the_context_is_found_by_what_it_can_do() -> None:
    context = FakeContext(3000)
    assert find_context(({"id": 1}, context), {}) is context
    assert find_context((), {"context": context}) is context
    assert find_context(({"id": 1}, None), {"x": 1}) is None


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def lambda_store(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_store")


def test_a_second_invocation_gives_up_before_its_deadline(lambda_store: Any) -> None:
    @remote_locked("order:{event[id]}", store=lambda_store, ttl=30)
    def handler(event: dict[str, Any], context: Any) -> str:
        return "ran"

    first = in_thread(RemoteLock("order:7", store=lambda_store, ttl=30).acquire)  # elsewhere
    started = time.monotonic()
    with pytest.raises(LockTimeout):
        handler({"id": 7}, FakeContext(1500))  # 1.5 s left, 1 s kept for the handler
    waited = time.monotonic() - started
    assert 0.4 <= waited < 1.5  # gave up with time to spare, not at a Lambda timeout
    first.release()
    assert handler({"id": 7}, FakeContext(1500)) == "ran"


def test_no_time_left_means_one_attempt(memory_store: MemoryStore) -> None:
    @remote_locked("k", store=memory_store)
    def handler(event: dict[str, Any], context: Any) -> str:
        return "ran"

    assert handler({}, FakeContext(200)) == "ran"  # a free lock is still taken
    memory_store.acquire("k", "someone", 30)
    started = time.monotonic()
    with pytest.raises(LockTimeout) as caught:
        handler({}, FakeContext(200))
    assert caught.value.attempts == 1
    assert time.monotonic() - started < 1


def test_the_lease_fits_in_the_invocation(memory_store: MemoryStore) -> None:
    seen: list[Lease] = []

    @remote_locked("k", store=memory_store, ttl=300)
    def handler(event: dict[str, Any], context: Any, *, lease: Lease | None = None) -> None:
        assert lease is not None
        seen.append(lease)

    handler({}, FakeContext(2000))
    assert seen[0].ttl <= 2.0
    handler({}, None)  # not a Lambda call: the configured ttl
    assert seen[1].ttl == 300


def test_lambda_margin_none_ignores_the_context(memory_store: MemoryStore) -> None:
    seen: list[Lease] = []

    @remote_locked("k", store=memory_store, ttl=300, lambda_margin=None)
    def handler(event: dict[str, Any], context: Any, *, lease: Lease | None = None) -> None:
        assert lease is not None
        seen.append(lease)

    handler({}, FakeContext(2000))
    assert seen[0].ttl == 300
    with pytest.raises(ValueError, match="lambda_margin"):
        remote_locked("k", lambda_margin=-1)


class CountingStore(SQLiteStore):
    extends = 0

    def extend(self, key: str, token: str, ttl: float) -> bool:
        type(self).extends += 1
        return super().extend(key, token, ttl)

    def extend_many(self, leases: Sequence[tuple[str, str, float]]) -> list[bool]:
        type(self).extends += len(leases)
        return super().extend_many(leases)


def test_no_renewal_outlives_the_invocation(tmp_path: Any) -> None:
    store = CountingStore(tmp_path / "locks.db")

    @remote_locked("k", store=store, ttl=30)
    def handler(event: dict[str, Any], context: Any) -> None:
        time.sleep(0.6)  # the lease is 0.9 s here (the time left): renewed every 0.3 s

    handler({}, FakeContext(900))
    renewed = CountingStore.extends
    assert renewed >= 1
    time.sleep(1.0)  # the environment is frozen and thawed: nothing more happens
    assert CountingStore.extends == renewed
    assert store.owner("k") is None
    store.close()


@pytest.mark.redis
def test_warm_invocations_reuse_the_connection_and_survive_a_broken_one(
    redis_server: RedisServer,
) -> None:
    store = RedisStore.from_url(f"{redis_server.url}?prefix=warm-{uuid.uuid4().hex[:8]}")
    admin = redis.Redis(port=redis_server.port)
    name = f"handler-{uuid.uuid4().hex[:8]}"
    store.client.client_setname(name)

    @remote_locked("k", store=store, ttl=10)
    def handler(event: dict[str, Any], context: Any) -> str:
        return "ok"

    def our_connections() -> int:
        return sum(1 for client in admin.client_list() if client.get("name") == name)

    for _ in range(5):
        assert handler({}, FakeContext(3000)) == "ok"
    assert our_connections() == 1  # one pooled connection, reused by every invocation
    admin.client_kill_filter(_type="normal", skipme=True)  # dropped while frozen
    assert handler({}, FakeContext(3000)) == "ok"  # reconnected transparently
    admin.close()
    store.close()


@pytest.mark.redis
@pytest.mark.slow
def test_stampede_of_lambda_invocations_calls_the_source_once(
    redis_server: RedisServer,
) -> None:
    env = {
        **os.environ,
        "AWS_LAMBDA_FUNCTION_NAME": "refresher",
        "REMOTELOCK_URL": f"{redis_server.url}?prefix=lambda-{uuid.uuid4().hex[:8]}",
        "CACHE_URL": redis_server.url,
    }
    source = f"source-{uuid.uuid4().hex[:8]}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.lambda_invoke", source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for _ in range(12)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    bodies = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        bodies.append(json.loads(json.loads(out.splitlines()[-1])["body"]))
    assert sum(body["refreshed"] for body in bodies) == 1  # one call to the slow source
    assert len({body["value"] for body in bodies}) == 1  # and everyone got its value
