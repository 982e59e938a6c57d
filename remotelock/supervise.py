"""Run a command while holding a lock: ``remotelock run``'s process supervision.

Holding a lock on behalf of another program needs more than a ``with`` block, which is
why this lives apart from the argument parsing in :mod:`remotelock.cli`:

- The command runs in a **session (and process group) of its own**, so that everything
  it starts, down to grandchildren, can be signalled as one group. In a new session it
  also has no controlling terminal, so it can never be stopped for reading from one.
- On Linux, ``remotelock`` also becomes a **child subreaper**
  (``prctl(PR_SET_CHILD_SUBREAPER)``). A process the command daemonises (``setsid``,
  a double fork, ``start_new_session=True``) leaves the group, and once its parent
  exits it would belong to init, out of reach. A subreaper gets it instead, so every
  descendant can be found in ``/proc``, stopped, and reaped once it exits
  (:mod:`remotelock._descendants`).
- SIGINT, SIGTERM and SIGHUP sent to ``remotelock`` are **forwarded** to that group
  (the terminal no longer delivers Ctrl-C to it), and ``remotelock`` keeps renewing the
  lease until the command has exited. Left at their defaults, these signals would kill
  ``remotelock`` and orphan the command, which would then run on without a lock once
  the lease ran out.
- The lease is renewed by the lock's background thread. If a renewal finds the lock
  gone, the ``on_lost`` callback sets an event; the wait loop sees it at once and
  stops the group **and every descendant**: SIGTERM, then SIGKILL after a grace
  period. The command may already overlap with the next holder, so neither it nor
  anything it started may run on.
- If the command exits while the lock is held but **leaves processes running**, a
  warning says how many, and by default they are stopped the same way *before* the
  lock is released: once it is released they would run unprotected, perhaps
  alongside the next holder, which is exactly the overlap a lock exists to prevent.
  ``keep_descendants`` (``--keep-descendants``) leaves them running instead, for a
  command whose job is to start something long-lived. The command's exit status
  stands either way.
- The exit status says what happened (:class:`ExitStatus`): the command's own status
  when it ran and exited while the lock was held, else a code of remotelock's own.

POSIX only (process groups, ``killpg``). Limits:

- Without the subreaper (macOS and other systems without ``prctl``, or a Linux that
  refuses it), only the process group is certain to be stopped. A Linux also finds
  the descendants still attached to the command's tree when it looks, but a process
  that left the group and whose parent has exited belongs to init and cannot be
  found; on macOS, with no ``/proc``, nothing outside the group is (``-v`` logs it).
- If ``remotelock`` itself is killed with SIGKILL (or the machine's OOM killer picks
  it), nothing is left to stop the command: it runs on without renewal, and the lock
  is free again after the ttl. Only a supervisor outside the process can cover that:
  a cgroup, such as a systemd service with ``KillMode=control-group`` (the default),
  which kills every process of the unit once its main process is gone.
- A descendant that changed its user id (a setuid program) may refuse the signals.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Final

from . import _descendants
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

# What `remotelock run --help` says of this module's behaviour and exit statuses.
RUN_HELP: Final = """\
Wait for the lock KEY, run COMMAND while holding it, and release it when COMMAND
exits. COMMAND gets REMOTELOCK_KEY and REMOTELOCK_FENCING_TOKEN in its environment
and runs in a process group of its own; SIGINT, SIGTERM and SIGHUP are forwarded to
that group. If the lock is lost, the group and every process COMMAND started get
SIGTERM, then SIGKILL after --grace seconds. If COMMAND exits leaving processes
running, a warning says how many, and they are stopped the same way before the lock
is released: they would otherwise go on without it (see --keep-descendants).

On Linux, remotelock becomes a child subreaper, so that processes that COMMAND
daemonises (setsid, double fork) stay its descendants and are found. If the kernel
refuses, a process that leaves COMMAND's process group is found only while its
parent still runs; on macOS, not at all. If remotelock itself is killed with
SIGKILL, nothing stops COMMAND: run remotelock in a cgroup (a systemd service,
KillMode=control-group) to cover that too.
"""

EXIT_HELP: Final = "exit status:\n" + "".join(
    f"  {status:<17}  {meaning}\n"
    for status, meaning in (
        ("the command's own", "it ran while the lock was held (128+N: killed by signal N)"),
        (ExitStatus.USAGE, "bad usage: unknown store scheme, bad option value, no command"),
        (ExitStatus.STORE_UNAVAILABLE, "the store could not be reached, or failed"),
        (ExitStatus.TIMEOUT, "timed out: another holder kept the lock for --timeout seconds"),
        (ExitStatus.LOCK_LOST, "the lock was lost while the command ran (it was stopped)"),
        (ExitStatus.CANNOT_EXECUTE, "the command could not be executed"),
        (ExitStatus.NOT_FOUND, "the command was not found"),
    )
)


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

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
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


def run(
    make_lock: MakeLock,
    command: Sequence[str],
    *,
    timeout: float,
    grace: float,
    keep_descendants: bool = False,
) -> int:
    """Run ``command`` while holding the lock ``make_lock`` builds; return the exit status.

    The command gets ``REMOTELOCK_KEY`` and ``REMOTELOCK_FENCING_TOKEN`` in its
    environment. The lock is released when the command exits, after the processes it
    left running are stopped (unless ``keep_descendants``). The calling process is a
    child subreaper while this runs (where the system allows it): every process that
    becomes its child meanwhile, other than those it had before, counts as the
    command's, so call this from a process that starts no others at the same time.

    :param make_lock: builds the lock, given the ``on_lost`` callback to install.
    :param command: the program and its arguments (no shell).
    :param timeout: seconds to wait for the lock (``0``: a single attempt).
    :param grace: seconds between SIGTERM and SIGKILL when stopping processes.
    :param keep_descendants: leave running the processes the command leaves behind
        when it exits with the lock held (with a warning), instead of stopping them.
    :raises LockTimeout: the lock stayed busy for ``timeout`` seconds.
    :raises StoreError: the store failed (or could not be reached) while acquiring.
    """
    if not command:
        raise ValueError("command must name a program to run")
    lost = threading.Event()
    lock = make_lock(lambda lease: lost.set())
    with _descendants.subreaper() as adopting, _Relay() as relay:
        if not adopting:
            log.debug(
                "cannot be a child subreaper here: a process that leaves the command's "
                "process group cannot be found once its parent has exited"
            )
        try:
            lease = lock.acquire(timeout=timeout)
            try:
                family = _descendants.Family(adopting)
                status = _run_held(
                    command,
                    lease,
                    relay,
                    lost,
                    grace,
                    family=family,
                    keep_descendants=keep_descendants,
                )
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
    command: Sequence[str],
    lease: Lease,
    relay: _Relay,
    lost: threading.Event,
    grace: float,
    *,
    family: _descendants.Family,
    keep_descendants: bool,
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
    family.started(proc)
    log.debug("started %r as process group %d", command[0], proc.pid)
    while True:
        returncode = proc.poll()
        if returncode is not None:
            relay.finished()
            status = _exit_status(returncode)
            log.debug("the command exited with status %d", status)
            _left_behind(family, grace, keep_descendants)
            return status
        family.reap()  # orphans that exited while the command runs: no zombie piles up
        # A lost lease does not wait for the next turn: it sets the event.
        if lost.wait(_descendants.POLL_SECONDS):
            _stop_lost(family, proc.pid, grace)
            relay.finished()
            return ExitStatus.LOCK_LOST


def _not_started(program: str, exc: OSError) -> int:
    if isinstance(exc, FileNotFoundError):
        log.error("command not found: %s", program)
        return ExitStatus.NOT_FOUND
    log.error("cannot execute %s: %s", program, exc.strerror or exc)
    return ExitStatus.CANNOT_EXECUTE


def _stop_lost(family: _descendants.Family, pgid: int, grace: float) -> None:
    """The lock is lost: stop the command's process group and everything it started."""
    others = family.others()
    log.warning(
        "stopping the command: SIGTERM to its process group %d%s (SIGKILL after %g s)",
        pgid,
        f" and {_processes(others)} it started" if others else "",
        grace,
    )
    family.stop(grace)


def _left_behind(family: _descendants.Family, grace: float, keep: bool) -> None:
    """The command exited, the lock still held: stop what it left running, or say so."""
    others = family.others()
    if others == 0:
        return
    if keep:
        log.warning(
            "the command exited, leaving %s running, which no longer hold the lock "
            "(--keep-descendants)",
            _processes(others),
        )
        return
    log.warning(
        "the command exited, leaving %s running: stopping %s before releasing the lock "
        "(SIGTERM, SIGKILL after %g s; --keep-descendants leaves them running)",
        _processes(others),
        "it" if others == 1 else "them",
        grace,
    )
    family.stop(grace)


def _processes(count: int | None) -> str:
    if count is None:  # no /proc: the process group is all that can be seen
        return "processes of its process group"
    return "1 process" if count == 1 else f"{count} processes"


def _exit_status(returncode: int) -> int:
    """``Popen.returncode`` as a shell reports it (``-N``, killed by signal N: 128 + N)."""
    return SIGNAL_BASE - returncode if returncode < 0 else returncode


def _forward(pgid: int, signum: int) -> None:
    log.debug("forwarding %s to process group %d", signal.Signals(signum).name, pgid)
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited already
        os.killpg(pgid, signum)


__all__ = [
    "EXIT_HELP",
    "FORWARDED",
    "RUN_HELP",
    "SIGNAL_BASE",
    "ExitStatus",
    "Interrupted",
    "MakeLock",
    "run",
]
