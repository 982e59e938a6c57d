"""The sync doorbell's leader/followers: a waiting thread reads its own wake-ups.

The :class:`ThreadReader` rules are checked with a stand-in for the doorbell's turn
(no server: exact interleavings), then on a real server: a lone waiting thread reads
the message that wakes it, in its own thread, and many waiting threads still share
one connection that only one thread uses at a time.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import tenacity

from remotelock import RemoteLock
from remotelock.stores.redis.bells import Switchboard
from remotelock.stores.redis.store import RedisStore
from remotelock.stores.redis.threads import GRACE, ThreadReader, ThreadWaiter
from tests.servers.redis import RedisServer

PATIENCE = 10.0


def wait_until(condition: Callable[[], bool], within: float = PATIENCE) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


class Connection:
    """Stands in for the doorbell's turn: one thread at a time (checked), a turn
    blocks until a message is posted or its timeout, and a message wakes a waiter."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.overlaps = 0
        self.turns: list[int] = []  # the thread of each turn
        self.inbox: list[ThreadWaiter | None] = []
        self.posted = threading.Condition()
        self.fail_in: int | None = None  # a turn in this thread raises
        self.going_on = True

    def post(self, waiter: ThreadWaiter | None) -> None:
        with self.posted:
            self.inbox.append(waiter)
            self.posted.notify_all()

    def turn(self, timeout: float) -> bool:
        with self.lock:
            self.inside += 1
            self.overlaps += self.inside > 1
        try:
            self.turns.append(threading.get_ident())
            if self.fail_in == threading.get_ident():
                raise ConnectionError("gone")
            with self.posted:
                if not self.inbox:
                    self.posted.wait(timeout)
                if self.inbox:
                    waiter = self.inbox.pop(0)
                    if waiter is not None:
                        waiter.wake("message")
            return self.going_on
        finally:
            with self.lock:
                self.inside -= 1


@pytest.fixture
def connection() -> Iterator[tuple[ThreadReader, Connection, list[BaseException]]]:
    """A ThreadReader whose reader thread runs ``Connection.turn``; it is stopped after."""
    reader, conn = ThreadReader(), Connection()
    ended: list[BaseException] = []

    def read() -> None:
        try:
            while reader.read(conn.turn, 0.5):
                pass
        except BaseException as exc:
            ended.append(exc)
        ended.append(StopIteration())

    reader.start(read)
    yield reader, conn, ended
    reader.stop()
    conn.post(None)
    wait_until(lambda: any(isinstance(e, StopIteration) for e in ended))


def test_a_lone_waiter_reads_its_own_wake_up(
    connection: tuple[ThreadReader, Connection, list[BaseException]],
) -> None:
    reader, conn, _ = connection
    wait_until(lambda: len(conn.turns) > 0)  # the reader thread reads
    waiter = ThreadWaiter("c", "turn", "t")
    me = threading.get_ident()
    nudged: list[bool] = []

    def nudge() -> None:  # what the doorbell's PUBLISH on its own channel does
        nudged.append(True)
        conn.post(None)

    sleeper = threading.Thread(target=reader.sleep, args=(waiter, PATIENCE, nudge))
    sleeper.start()
    wait_until(lambda: conn.turns[-1] == sleeper.ident)  # handed the connection
    assert nudged  # the busy reader thread was asked to let go
    conn.post(waiter)
    sleeper.join(PATIENCE)
    assert waiter.woken
    assert conn.turns[-1] == sleeper.ident  # the waking turn ran in the waiter's thread
    assert me not in conn.turns
    assert conn.overlaps == 0

    # Back within GRACE: it leads at once, with no nudge and no turn of the reader's.
    turns, nudged[:] = len(conn.turns), []
    waiter.rearm()
    conn.post(waiter)
    started = time.monotonic()
    reader.sleep(waiter, PATIENCE, nudge)
    if time.monotonic() - started < GRACE:  # (on a slow machine the reader may be back)
        assert not nudged
        assert set(conn.turns[turns:]) == {me}
    assert waiter.woken


def test_a_leader_hands_the_connection_to_a_follower(
    connection: tuple[ThreadReader, Connection, list[BaseException]],
) -> None:
    reader, conn, _ = connection
    leader, follower = ThreadWaiter("c", "turn", "a"), ThreadWaiter("c", "turn", "b")
    first = threading.Thread(target=reader.sleep, args=(leader, PATIENCE, lambda: None))
    first.start()
    wait_until(lambda: conn.turns[-1] == first.ident)
    second = threading.Thread(target=reader.sleep, args=(follower, PATIENCE, lambda: None))
    second.start()
    time.sleep(0.05)
    assert second.ident not in conn.turns  # it follows while the first leads
    conn.post(leader)  # read by the leader, which is done: the follower leads
    first.join(PATIENCE)
    wait_until(lambda: conn.turns[-1] == second.ident)
    conn.post(follower)
    second.join(PATIENCE)
    assert leader.woken
    assert follower.woken
    assert conn.overlaps == 0


def test_a_leaders_failure_ends_the_reader_thread(
    connection: tuple[ThreadReader, Connection, list[BaseException]],
) -> None:
    reader, conn, ended = connection
    waiter = ThreadWaiter("c", "turn", "t")
    conn.fail_in = threading.get_ident()
    conn.post(None)  # let a turn of the reader thread end, if it is in one
    reader.sleep(waiter, 0.5, lambda: conn.post(None))
    assert threading.get_ident() in conn.turns  # it led, and its turn failed
    wait_until(lambda: len(ended) == 2)
    assert isinstance(ended[0], ConnectionError)  # raised where the connection is closed
    assert not waiter.woken  # the doorbell wakes everyone when its reader ends


def test_a_stopped_reader_waits_for_the_leader_to_let_go(
    connection: tuple[ThreadReader, Connection, list[BaseException]],
) -> None:
    """The connection is closed only once nobody uses it: the leader's turn sees the
    doorbell closed (``False``), and then the reader thread stops."""
    reader, conn, ended = connection
    waiter = ThreadWaiter("c", "turn", "t")
    sleeper = threading.Thread(target=reader.sleep, args=(waiter, PATIENCE, conn.post))
    conn.going_on = True
    sleeper.start()
    wait_until(lambda: conn.turns[-1] == sleeper.ident)
    reader.stop()
    time.sleep(0.05)
    assert not ended  # the leader still reads
    conn.going_on = False  # the doorbell is closed: the next turn says stop
    conn.post(None)
    sleeper.join(PATIENCE)
    wait_until(lambda: len(ended) == 1)
    assert isinstance(ended[0], StopIteration)
    assert conn.overlaps == 0


def test_one_thread_at_a_time_uses_the_connection(
    connection: tuple[ThreadReader, Connection, list[BaseException]],
) -> None:
    """Eight threads wait over and over, for random times, and are woken at random:
    every wait ends, and no two turns ever overlap."""
    reader, conn, _ = connection
    registered: list[ThreadWaiter] = []
    guard = threading.Lock()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(150):
                waiter = ThreadWaiter("c", "turn", None)
                with guard:
                    registered.append(waiter)
                reader.sleep(waiter, rng.uniform(0, 0.01), lambda: conn.post(None))
                with guard:
                    registered.remove(waiter)
        except BaseException as exc:
            errors.append(exc)

    def waker(stop: threading.Event) -> None:
        rng = random.Random(0)
        while not stop.is_set():
            with guard:
                chosen = rng.choice(registered) if registered else None
            conn.post(chosen)
            time.sleep(rng.uniform(0, 0.002))

    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    posting = threading.Thread(target=waker, args=(stop,))
    posting.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    posting.join(PATIENCE)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)
    assert conn.overlaps == 0
    led = {t.ident for t in threads} & set(conn.turns)
    assert len(led) >= 2  # waiting threads did lead


# -- on a real server ----------------------------------------------------------------------


@pytest.mark.redis
def test_a_lone_waiting_thread_reads_its_own_wake_up_from_redis(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release's message is read and handed on in the thread that waits for it."""
    prefix = f"lead-{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    dispatched: list[tuple[str, int]] = []
    original = Switchboard.message

    def message(board: Switchboard, name: str, data: str, now: float) -> None:
        if data:
            dispatched.append((data[0], threading.get_ident()))
        original(board, name, data, now)

    monkeypatch.setattr(Switchboard, "message", message)
    holder = RemoteLock("k", store=store, ttl=30).acquire()
    got: list[int] = []

    def waiter() -> None:
        with RemoteLock("k", store=store, ttl=30, stop=tenacity.stop_after_delay(PATIENCE)):
            got.append(threading.get_ident())

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)  # queued, subscribed, and sleeping
    holder.release()
    thread.join(PATIENCE)
    store.close()
    assert got == [thread.ident]
    handed = [ident for kind, ident in dispatched if kind == "g"]
    assert handed == [thread.ident]
