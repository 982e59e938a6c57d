"""The wake-up rules of the Redis stores, without a server (see ``_redis_bells``)."""

from __future__ import annotations

import math

import pytest

from remotelock.stores.base import Handover
from remotelock.stores.redis.bells import (
    ACTIVATED,
    BACKOFF,
    DROPPED,
    LINGER,
    LISTEN,
    NUDGE,
    PERMIT,
    START,
    TURN,
    UNAVAILABLE,
    WAITING,
    WATCH,
    Switchboard,
    Waiter,
)
from remotelock.stores.redis.waiters import Postpone, Released

BELL = "p:{k}:bell"


class Recorder(Waiter):
    __slots__ = ("signals",)

    def __init__(self, role: str, token: str | None = None, channel: str = BELL) -> None:
        super().__init__(channel, role, token)
        self.signals = 0

    def signal(self) -> None:
        self.signals += 1


def board_with_reader() -> tuple[Switchboard, object]:
    """A switchboard whose reader has started and subscribed its nudge channel."""
    board = Switchboard("p:bells:x")
    first = Recorder(TURN, "first")
    assert board.enter(first, 0.0, 1.0) == (WAITING, START)
    reader = board.reader
    assert reader is not None
    assert board.work(reader, 1.0) == ([BELL], [], False)
    board.subscribed("p:bells:x", 1.0)
    board.subscribed(BELL, 1.5)
    assert first.value is ACTIVATED
    board.leave(first, 2.0)
    return board, reader


def test_a_handover_goes_to_its_waiter_and_every_watcher_hears_the_release() -> None:
    board, _ = board_with_reader()
    named, other, watcher, listener = (
        Recorder(TURN, "B"), Recorder(TURN, "C"), Recorder(WATCH, "D"), Recorder(LISTEN)
    )  # fmt: skip
    for waiter in (named, other, watcher, listener):
        assert board.enter(waiter, 3.0, 3.0) == (WAITING, None)
    board.message(BELL, "g7:3000:B", 4.0)
    assert named.value == Handover(7, 3.0)
    assert (watcher.woken, listener.woken, other.woken) == (True, True, False)
    assert watcher.value == Released(7)  # made no later than its fencing token
    board.message(BELL, "t" + "C", 4.5)
    assert other.woken
    assert other.value is None


def test_a_handover_is_never_overwritten_by_a_later_wake_up() -> None:
    board, _ = board_with_reader()
    waiter = Recorder(WATCH, "B")
    board.enter(waiter, 3.0, 3.0)
    board.message(BELL, "g7:3000:B", 4.0)
    board.message(BELL, "r", 4.1)
    assert waiter.value == Handover(7, 3.0)
    assert waiter.signals == 1


def test_a_message_before_the_waiter_registers_is_kept_for_it() -> None:
    board, _ = board_with_reader()
    board.message(BELL, "g8:3000:B", 5.0)  # B asked at 4.0, waits from 5.5
    assert board.enter(Recorder(TURN, "B"), 4.0, 5.5) == (Handover(8, 3.0), None)
    board.message(BELL, "g9:3000:C", 5.0)  # C asked after it: from an earlier turn
    assert board.enter(Recorder(TURN, "C"), 6.0, 6.5) == (WAITING, None)
    board.message(BELL, "g10:1000:D", 5.0)  # kept, but its lease is over by now
    assert board.enter(Recorder(TURN, "D"), 4.0, 7.0) == (None, None)
    board.message(BELL, "tE", 5.0)
    assert board.enter(Recorder(TURN, "E"), 4.0, 5.5) == (None, None)
    board.message(BELL, "r1234", 5.0)  # a watcher learns when the release was made
    assert board.enter(Recorder(WATCH, "F"), 4.0, 5.5) == (Released(1234), None)
    assert board.enter(Recorder(LISTEN), 4.0, 5.5) == (None, None)


def test_a_watcher_hears_when_each_release_was_made() -> None:
    """A release's message says when it was made (``r<us>``; ``r`` alone: unknown, 0),
    so that a watcher can tell whether it queued before it (and is out of line)."""
    board, _ = board_with_reader()
    first, second, third = Recorder(WATCH, "A"), Recorder(WATCH, "B"), Recorder(WATCH, "C")
    board.enter(first, 3.0, 3.0)
    board.message(BELL, "r1700000000000123", 4.0)
    assert first.value == Released(1700000000000123)
    board.enter(second, 4.5, 4.5)
    board.message(BELL, "r", 5.0)
    assert second.value == Released(0)
    board.enter(third, 5.5, 5.5)
    board.message(BELL, "tA", 6.0)  # a turn is no release
    assert not third.woken


def test_a_wait_whose_request_came_before_the_subscription_looks_once() -> None:
    board, _ = board_with_reader()  # the channel became active at 1.5
    assert board.enter(Recorder(TURN, "B"), 1.0, 2.0) == (ACTIVATED, None)
    assert board.enter(Recorder(TURN, "B"), 1.6, 2.0) == (WAITING, None)


def test_a_new_channel_nudges_a_listening_reader() -> None:
    board, reader = board_with_reader()
    other = Recorder(TURN, "B", channel="p:{other}:bell")
    assert board.enter(other, 3.0, 3.0) == (WAITING, NUDGE)
    again = Recorder(TURN, "C", channel="p:{other}:bell")
    assert board.enter(again, 3.0, 3.0) == (WAITING, None)  # one nudge per channel
    assert board.work(reader, 3.1) == (["p:{other}:bell"], [], False)


def test_one_freed_permit_wakes_one_waiter() -> None:
    board, _ = board_with_reader()
    first, second = Recorder(PERMIT), Recorder(PERMIT)
    board.enter(first, 3.0, 3.0)
    board.enter(second, 3.0, 3.0)
    board.message(BELL, "p", 4.0)
    assert (first.woken, second.woken) == (True, False)
    board.leave(first, 4.1)
    board.leave(second, 4.1)
    board.message(BELL, "p", 5.0)  # nobody waits: noted for the next one, once
    assert board.enter(Recorder(PERMIT), 4.5, 5.5) == (None, None)
    assert board.enter(Recorder(PERMIT), 4.5, 5.5) == (WAITING, None)


def test_a_dropped_connection_wakes_everyone_and_the_next_wait_reconnects() -> None:
    board, reader = board_with_reader()
    waiters = [Recorder(TURN, "B"), Recorder(LISTEN), Recorder(PERMIT)]
    for waiter in waiters:
        board.enter(waiter, 3.0, 3.0)
    board.dropped(reader, 4.0, worked=True)
    assert all(waiter.value is DROPPED for waiter in waiters)
    assert board.enter(Recorder(TURN, "C"), 5.0, 5.0) == (WAITING, START)


def test_a_reader_that_never_worked_makes_waits_poll_for_a_while() -> None:
    board = Switchboard("p:bells:x")
    assert board.enter(Recorder(TURN, "B"), 0.0, 1.0) == (WAITING, START)
    board.dropped(board.reader, 1.0, worked=False)
    assert board.enter(Recorder(TURN, "B"), 1.0, 1.0 + BACKOFF / 2) == (UNAVAILABLE, None)
    assert board.enter(Recorder(TURN, "B"), 1.0, 1.0 + BACKOFF) == (WAITING, START)
    broken = Switchboard("p:bells:y")
    broken.broken = True
    assert broken.enter(Recorder(TURN, "B"), 0.0, 1.0) == (UNAVAILABLE, None)


def test_idle_channels_linger_then_the_reader_stops() -> None:
    board, reader = board_with_reader()  # its only waiter left at 2.0
    assert board.work(reader, 2.0 + LINGER / 2) == ([], [], False)
    assert board.work(reader, 2.0 + LINGER) == ([], [BELL], True)
    assert board.reader is None
    board.dropped(reader, 2.0 + LINGER, worked=True)  # a stopped reader changes nothing
    assert board.enter(Recorder(TURN, "B"), 30.0, 30.0) == (WAITING, START)


@pytest.mark.parametrize("data", ["", "g", "gx:1:B", "g1:x:B", "zzz", "p?"])
def test_malformed_messages_are_ignored(data: str) -> None:
    board, _ = board_with_reader()
    waiter = Recorder(TURN, "B")
    board.enter(waiter, 3.0, 3.0)
    board.message(BELL, data, 4.0)
    assert not waiter.woken
    assert board.channels[BELL].released_at == -math.inf


def test_a_postpone_reaches_only_its_waiter_and_is_no_release() -> None:
    """Bounded barging tells the first in line when to look at the latest ('w'): the
    waiter wakes with a Postpone; nobody else does, and no release is recorded."""
    board, _ = board_with_reader()
    own = "p:bells:x"
    head = Recorder(TURN, f"{BELL} H", channel=own)
    other = Recorder(TURN, f"{BELL} O", channel=own)
    watcher = Recorder(WATCH, "W")
    for waiter in (head, other, watcher):
        assert board.enter(waiter, 3.0, 3.0)[0] is WAITING
    board.message(own, f"w250:{BELL} H", 4.0)
    assert isinstance(head.value, Postpone)
    assert head.value.until == pytest.approx(4.25)
    assert (other.signals, watcher.signals) == (0, 0)
    board.message(BELL, "w250:H", 4.0)  # the bell's copy: no change of hands
    assert watcher.signals == 0
    assert board.channels[BELL].released_at < 4.0
    board.message(own, f"g7:3000:{BELL} H", 4.1)  # a hand-over still wins
    assert isinstance(head.value, Handover)
