"""PostgreSQL under many waiters: a release wakes one waiter per process (not all of
them), a wake-up nobody uses is passed on, a full server is waited out, and 20
processes of 50 threads share a server with max_connections=100 without an error."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import tenacity

from remotelock import RemoteLock, remote_locked
from remotelock.stores import store_from_url
from remotelock.stores.postgres.busy import server_full
from remotelock.stores.postgres.waiting import PASS_ON, Waiters
from tests.servers.postgres import PostgresServer, _bindir

# -- the bookkeeping, free of I/O ---------------------------------------------------------


def test_a_notification_wakes_the_longest_waiter_not_yet_woken() -> None:
    waiters: Waiters[str] = Waiters()
    woken: set[str] = set()
    for name in ("a", "b", "c"):
        waiters.add("k", name)
    first = waiters.notified("k", 0.0, woken.__contains__)
    assert first == ["a"]
    woken.update(first)
    assert waiters.notified("k", 0.0, woken.__contains__) == ["b"]  # a second release
    woken.add("b")
    waiters.tried("k")
    assert waiters.overdue(10.0, woken.__contains__) == []  # used: nothing to pass on
    assert waiters.of(None) == ["a", "b", "c"]  # a reconnection still wakes everyone


def test_an_unused_wake_up_is_passed_on_after_a_while() -> None:
    waiters: Waiters[str] = Waiters()
    woken: set[str] = set()
    for name in ("a", "b"):
        waiters.add("k", name)
    woken.update(waiters.notified("k", 0.0, woken.__contains__))
    assert waiters.next_due(0.0, 0.5) == pytest.approx(PASS_ON)
    assert waiters.overdue(PASS_ON / 2, woken.__contains__) == []
    assert waiters.overdue(PASS_ON, woken.__contains__) == ["b"]
    woken.add("b")
    assert waiters.overdue(3 * PASS_ON, woken.__contains__) == []  # nobody left to wake
    assert waiters.next_due(3 * PASS_ON, 0.5) == 0.5


def test_a_full_server_is_recognised() -> None:
    assert server_full(psycopg.OperationalError("FATAL:  sorry, too many clients already"))
    reserved = "FATAL:  remaining connection slots are reserved for roles with SUPERUSER"
    assert server_full(psycopg.OperationalError(reserved))
    assert not server_full(psycopg.OperationalError("connection refused"))


# -- one process --------------------------------------------------------------------------


class CountingAcquires:
    def __init__(self, store: Any) -> None:
        self.calls = 0
        acquire = store.acquire

        def counted(*args: Any) -> Any:
            self.calls += 1
            return acquire(*args)

        store.acquire = counted


WAITERS = 50


def test_a_release_wakes_one_waiter_not_all(postgres_store: Any, key: str) -> None:
    """Draining 50 waiters costs about one try each (waking all of them at each
    release cost over three times as many here)."""
    counter = CountingAcquires(postgres_store)
    holder = RemoteLock(key, store=postgres_store, ttl=60).acquire()
    entered, errors = [0], []

    def worker() -> None:
        try:
            with RemoteLock(key, store=postgres_store, ttl=60, wait=tenacity.wait_fixed(60)):
                entered[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(WAITERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while counter.calls < WAITERS + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # every waiter asleep on its subscription
    tries_before = counter.calls
    holder.release()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert entered[0] == WAITERS
    assert counter.calls - tries_before <= 2 * WAITERS, counter.calls - tries_before


def test_skip_if_waiters_pass_the_wake_up_on(postgres_store: Any, key: str) -> None:
    """Callers whose ``skip_if`` says no lock is needed do not try it, so the wake-up
    each gets is passed to the next: all return soon after the release, none sleeps
    until its 60 s bound or the holder's 60 s lease."""
    fresh = threading.Event()
    holder = RemoteLock(key, store=postgres_store, ttl=60).acquire()

    @remote_locked(key, store=postgres_store, ttl=60, wait=tenacity.wait_fixed(60),
                   skip_if=fresh.is_set)  # fmt: skip
    def refresh(*, has_lock: bool = False) -> bool:
        return has_lock

    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(refresh())) for _ in range(20)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # all of them waiting
    fresh.set()
    released = time.monotonic()
    holder.release()
    for thread in threads:
        thread.join(120)
    assert results == [False] * 20
    assert time.monotonic() - released < 30


# -- many processes -----------------------------------------------------------------------

PROCESSES, THREADS = 20, 50

WORKER = """
import json, sys, threading, time
import tenacity
from remotelock import RemoteLock
from remotelock.stores import store_from_url

store = store_from_url(sys.argv[1])
start, done, errors = float(sys.argv[2]), [0], []

def work():
    time.sleep(max(0.0, start - time.time()))
    try:
        with RemoteLock("k", store=store, ttl=60, stop=tenacity.stop_after_delay(300)):
            done[0] += 1
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=work) for _ in range(int(sys.argv[3]))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"done": done[0], "errors": errors[:3], "failed": len(errors)}))
"""


@pytest.fixture
def small_postgres() -> Iterator[PostgresServer]:
    """A server of its own with room for 100 connections."""
    server = PostgresServer(_bindir(), max_connections=100)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.mark.slow
def test_twenty_processes_of_fifty_threads_on_a_hundred_connections(
    small_postgres: PostgresServer,
) -> None:
    url = f"{small_postgres.url}?table=t_{uuid.uuid4().hex[:8]}"
    store_from_url(url).owner("k")  # the table, made once
    watcher = psycopg.connect(small_postgres.url, autocommit=True)  # before the rush
    start = time.time() + 3  # every process imported and ready
    command = [sys.executable, "-c", WORKER, url, str(start), str(THREADS)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(PROCESSES)
    ]
    peak = 0
    while any(proc.poll() is None for proc in procs):
        row = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'remotelock'"
        ).fetchone()
        peak = max(peak, int(row[0]) if row else 0)
        time.sleep(0.1)
    watcher.close()
    reports = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    assert [r["errors"] for r in reports if r["failed"]] == []
    assert sum(r["done"] for r in reports) == PROCESSES * THREADS
    assert peak <= 100
