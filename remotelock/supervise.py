"""Run a command while holding a lock: ``remotelock run``'s process supervision.

Holding a lock on behalf of another program needs more than a ``with`` block, which is
why this lives apart from the argument parsing in :mod:`remotelock.cli`:

- The command runs in a **session (and process group) of its own**, so that everything
  it starts, down to grandchildren, can be signalled as one group. In a new session it
  also has no controlling terminal, so it can never be stopped for reading from one.
- SIGINT, SIGTERM and SIGHUP sent to ``remotelock`` are **forwarded** to that group
  (the terminal no longer delivers Ctrl-C to it), and ``remotelock`` keeps renewing the
  lease until the command has exited. Left at their defaults, these signals would kill
  ``remotelock`` and orphan the command, which would then run on without a lock once
  the lease ran out.
- The lease is renewed by the lock's background thread. If a renewal finds the lock
  gone, the ``on_lost`` callback sets an event; the wait loop sees it at once and
  stops the group: SIGTERM, then SIGKILL after a grace period. The command may already
  overlap with the next holder, so it must not run on.
- The exit status says what happened (:class:`ExitStatus`): the command's own status
  when it ran and exited while the lock was held, else a code of remotelock's own.

POSIX only (process groups, ``killpg``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import Any

from .errors import LockLost
from .lease import Lease, OnLost
from .lock import RemoteLock

log = logging.getLogger(__name__)


class ExitStatus(enum.IntEnum):
    """Exit statuses of remotelock's own; any other status is the command's.

    69 and 75 are the BSD ``sysexits.h`` codes of the same meaning. 79 lies just past
    that table and is used by no common tool, so it cannot be mistaken for one of
    them. 126, 127 and 128 + N are what shells return for the same situations.
    """

    USAGE = 2
    """Bad command line: unknown store scheme, bad ttl, no command..."""
    STORE_UNAVAILABLE = 69
    """``EX_UNAVAILABLE``: the store could not be reached (or failed) before the command ran."""
    TIMEOUT = 75
    """``EX_TEMPFAIL``: another holder kept the lock for the whole ``--timeout``."""
    LOCK_LOST = 79
    """The lock was lost while the command ran; the command was stopped (or, if it had
    already finished, may not have run alone)."""
    CANNOT_EXECUTE = 126
    """The command was found but could not be executed."""
    NOT_FOUND = 127
    """The command was not found."""


SIGNAL_BASE = 128
"""A command killed by signal N exits with ``128 + N``, as shells report it."""

# Signals a terminal, a service manager or a user sends to stop a job.
FORWARDED: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)

# How often the wait loop checks whether the command has exited. A lost lease does
# not wait for it: it sets the event the loop sleeps on.
_POLL_SECONDS = 0.05

MakeLock = Callable[[OnLost], RemoteLock]
"""Builds the lock to hold, given the ``on_lost`` callback it must call."""


class Interrupted(BaseException):
    """A forwarded signal arrived before the command started (so nothing to forward to).

    A ``BaseException``, like :class:`KeyboardInterrupt`, so that an acquire it
    interrupts gives back whatever it may have taken.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Relay:
    """Handles the forwarded signals while ``run`` is active.

    While waiting for the lock, a signal raises :class:`Interrupted` (to stop waiting).
    Once the lock is held, signals are queued until the command has started, then sent
    to its process group. Once it has exited they are ignored: only the release is
    left to do, and the store's timeouts bound it.
    """

    def __init__(self) -> None:
        self._saved: dict[int, Any] = {}
        self._starting = False
        self._pgid: int | None = None
        self._done = False
        self._pending: list[int] = []

    def __enter__(self) -> _Relay:
        for signum in FORWARDED:
            self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._saved.items():
            # None: the old handler was not installed from Python; the default is closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def starting(self) -> None:
        """The lock is held: from now on, signals are for the command, never raised."""
        self._starting = True

    def started(self, pgid: int) -> None:
        """The command runs in process group ``pgid``: forward the queued signals."""
        self._pgid = pgid
        for signum in self._pending:
            _forward(pgid, signum)
        self._pending.clear()

    def finished(self) -> None:
        """The command has exited: its process group id may be reused, stop forwarding."""
        self._done = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._done:
            log.debug("ignoring %s: the command has exited", signal.Signals(signum).name)
        elif self._pgid is not None:
            _forward(self._pgid, signum)
        elif self._starting:
            self._pending.append(signum)
        else:
            raise Interrupted(signum)


def run(make_lock: MakeLock, command: Sequence[str], *, timeout: float, grace: float) -> int:
    """Run ``command`` while holding the lock ``make_lock`` builds; return the exit status.

    The command gets ``REMOTELOCK_KEY`` and ``REMOTELOCK_FENCING_TOKEN`` in its
    environment. The lock is released when the command exits.

    :param make_lock: builds the lock, given the ``on_lost`` callback to install.
    :param command: the program and its arguments (no shell).
    :param timeout: seconds to wait for the lock (``0``: a single attempt).
    :param grace: seconds between SIGTERM and SIGKILL when the lock is lost.
    :raises LockTimeout: the lock stayed busy for ``timeout`` seconds.
    :raises StoreError: the store failed (or could not be reached) while acquiring.
    """
    if not command:
        raise ValueError("command must name a program to run")
    lost = threading.Event()
    lock = make_lock(lambda lease: lost.set())
    with _Relay() as relay:
        try:
            lease = lock.acquire(timeout=timeout)
            try:
                status = _run_held(command, lease, relay, lost, grace)
            except BaseException:
                lock.finish(lease, raised=True)
                raise
            try:
                lock.finish(lease, raised=False)
            except LockLost:
                if status != ExitStatus.LOCK_LOST:
                    log.warning(
                        "the command finished, but the lock was lost before it did: "
                        "it may not have run alone"
                    )
                return ExitStatus.LOCK_LOST
            return status
        except Interrupted as exc:
            name = signal.Signals(exc.signum).name
            log.debug("interrupted by %s before the command started", name)
            return SIGNAL_BASE + exc.signum


def _run_held(
    command: Sequence[str], lease: Lease, relay: _Relay, lost: threading.Event, grace: float
) -> int:
    """Start the command, wait for it (or for the loss of the lock); its exit status."""
    relay.starting()
    if lost.is_set():
        return ExitStatus.LOCK_LOST  # lost before it started: don't start it at all
    env = dict(os.environ)
    env["REMOTELOCK_KEY"] = lease.key
    env["REMOTELOCK_FENCING_TOKEN"] = str(lease.fencing_token)
    try:
        proc = subprocess.Popen(list(command), env=env, start_new_session=True)
    except OSError as exc:
        return _not_started(command[0], exc)
    relay.started(proc.pid)
    log.debug("started %r as process group %d", command[0], proc.pid)
    while True:
        returncode = proc.poll()
        if returncode is not None:
            relay.finished()
            status = _exit_status(returncode)
            log.debug("the command exited with status %d", status)
            return status
        if lost.wait(_POLL_SECONDS):
            status = _stop_group(proc, grace)
            relay.finished()
            return status


def _not_started(program: str, exc: OSError) -> int:
    if isinstance(exc, FileNotFoundError):
        log.error("command not found: %s", program)
        return ExitStatus.NOT_FOUND
    log.error("cannot execute %s: %s", program, exc.strerror or exc)
    return ExitStatus.CANNOT_EXECUTE


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM the command's process group, SIGKILL what is left after ``grace`` seconds."""
    pgid = proc.pid
    log.warning(
        "stopping the command: SIGTERM to its process group %d (SIGKILL after %g s)",
        pgid,
        grace,
    )
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    # Done when the command has exited *and* nothing else is left in its group:
    # a grandchild that ignores SIGTERM must not outlive the lock either.
    while proc.poll() is None or _group_alive(pgid):
        if time.monotonic() >= deadline:
            log.warning("process group %d still running after %g s: SIGKILL", pgid, grace)
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(_POLL_SECONDS)
    return ExitStatus.LOCK_LOST


def _exit_status(returncode: int) -> int:
    """``Popen.returncode`` as a shell reports it (``-N``, killed by signal N: 128 + N)."""
    return SIGNAL_BASE - returncode if returncode < 0 else returncode


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member we may not signal (a setuid program) is still a member
    return True


def _forward(pgid: int, signum: int) -> None:
    log.debug("forwarding %s to process group %d", signal.Signals(signum).name, pgid)
    _signal_group(pgid, signum)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited already
        os.killpg(pgid, signum)


__all__ = ["FORWARDED", "SIGNAL_BASE", "ExitStatus", "Interrupted", "MakeLock", "run"]
