"""Find, signal and reap every process a supervised command started (Linux).

A command that daemonises a process (``setsid``, a double fork,
``start_new_session=True``) moves it out of the command's process group, so
signalling the group misses it; and once its parent exits, the kernel re-parents it
to init, out of the supervisor's reach. Two Linux facilities close that gap:

- a **child subreaper** (``prctl(PR_SET_CHILD_SUBREAPER)``, Linux 3.4) gets those
  orphans re-parented to itself instead of init, so they stay its descendants;
- ``/proc/<pid>/stat`` gives every process's parent, process group, state and start
  time, from which the tree below the supervisor can be read at any time.

A process is known by its pid *and* start time, and is signalled through a pidfd
checked against that start time, so a pid that an unrelated process reuses is never
signalled. A subreaper must also reap the orphans it adopts, or they stay zombies;
:meth:`Family.reap` does, but never reaps the command itself, whose exit status
belongs to its ``subprocess.Popen``.

Without ``/proc`` (macOS) nothing is found here and the caller falls back on the
process group. Without the subreaper, descendants are found only while they are
still attached to the tree: one whose parent has exited belongs to init.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37

POLL_SECONDS = 0.05
"""How often to look again whether the processes being stopped have exited."""

KILL_WAIT_SECONDS = 10.0
"""How long processes may take to vanish after SIGKILL before a warning says they are
stuck (in an uninterruptible sleep, such as I/O on a dead network filesystem)."""

_GONE = frozenset("ZX")  # zombie or dead: exited, whether or not reaped yet


def become_subreaper() -> bool:
    """Make this process a child subreaper; ``False`` where the system cannot.

    A function of its own so that a test can take the ability away.
    """
    return _prctl_subreaper(1)


def _prctl_subreaper(value: int) -> bool:
    prctl = _prctl()
    if prctl is None:
        return False
    if prctl(_PR_SET_CHILD_SUBREAPER, value, 0, 0, 0) != 0:
        log.debug("prctl(PR_SET_CHILD_SUBREAPER) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def _is_subreaper() -> bool:
    prctl = _prctl()
    if prctl is None:
        return False
    flag = ctypes.c_int(0)
    return prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and bool(flag.value)


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The running interpreter is linked against libc: no need to search for it.
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError) as exc:
        log.debug("no prctl in this process: %s", exc)
        return None
    return prctl


@contextlib.contextmanager
def subreaper() -> Iterator[bool]:
    """Be a child subreaper inside the block; yield whether that worked.

    The previous setting comes back afterwards, so that a program that calls
    ``supervise.run`` does not stay a subreaper for good.
    """
    was = _is_subreaper()
    adopting = was or become_subreaper()
    try:
        yield adopting
    finally:
        if adopting and not was:
            _prctl_subreaper(0)


class Proc(NamedTuple):
    """One line of ``/proc/<pid>/stat``, the fields needed here."""

    pid: int
    ppid: int
    pgid: int
    state: str
    start: int
    """Start time in clock ticks after boot: with the pid, it names one process for good."""

    @property
    def running(self) -> bool:
        return self.state not in _GONE


def _read(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:  # exited meanwhile, or /proc hides it
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = data.rpartition(b")")[2].split()
    try:
        return Proc(pid, int(fields[1]), int(fields[2]), fields[0].decode(), int(fields[19]))
    except (IndexError, ValueError):
        return None


def _table() -> dict[int, Proc]:
    """Every visible process; empty without ``/proc``."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    procs = (_read(int(name)) for name in names if name.isdigit())
    return {proc.pid: proc for proc in procs if proc is not None}


class Family:
    """The processes a command started: its process group and the tree below this process.

    Children this process had before the command started, and their trees, are not
    the command's and are left alone. A process, once seen, stays known (by pid and
    start time) after it leaves the tree, so that it can still be signalled after
    its parent exits, even by a process that is not a subreaper.
    """

    def __init__(self, adopting: bool) -> None:
        self.adopting = adopting
        self._me = os.getpid()
        self._table = _table()
        self._before = {p.pid: p.start for p in self._table.values() if p.ppid == self._me}
        self._popen: subprocess.Popen[bytes] | None = None
        self._command = Proc(-1, -1, -1, "X", -1)
        self._known: dict[int, int] = {}  # pid: start time

    def started(self, popen: subprocess.Popen[bytes]) -> None:
        """The command runs, as the leader of a process group of its own."""
        self._popen = popen
        self._command = _read(popen.pid) or Proc(popen.pid, self._me, popen.pid, "R", -1)

    def others(self) -> int | None:
        """How many processes besides the command still run; ``None``: some, number unknown."""
        self._still_running()
        if self._table:
            return len(self._running())
        return None if _group_alive(self._command.pid) else 0

    def stop(self, grace: float) -> None:
        """SIGTERM the command and every descendant, SIGKILL what is left after ``grace`` s.

        Done when the command has exited *and* nothing it started is left: a grandchild
        that ignores SIGTERM, or one that daemonised, must not outlive the lock either.
        """
        # One SIGTERM each, to the processes of a scan made before any signal: what a
        # SIGTERM handler then starts (a clean-up helper) may run until the SIGKILL,
        # and so may a child forked between the scan and its parent's signal.
        self._scan()
        grouped = self._signal_group(signal.SIGTERM)
        self._signal_group(signal.SIGCONT)  # a stopped process handles SIGTERM once resumed
        for proc in self._running():
            if not (grouped and proc.pgid == self._command.pid):  # no handler runs twice
                _send(proc, signal.SIGTERM)
                _send(proc, signal.SIGCONT)
        deadline = time.monotonic() + grace
        while self._still_running():
            if time.monotonic() >= deadline:
                log.warning("the command's processes still running after %g s: SIGKILL", grace)
                self._kill()
                return
            time.sleep(POLL_SECONDS)

    def _kill(self) -> None:
        """SIGKILL until nothing is left: a process may fork between a scan and its signal."""
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while True:
            self._signal_group(signal.SIGKILL)
            for proc in self._running():
                _send(proc, signal.SIGKILL)
            if self._popen is not None and self._popen.returncode is None:
                self._popen.wait()
            if not self._still_running():
                return
            if time.monotonic() >= deadline:
                log.warning("processes still running %g s after SIGKILL", KILL_WAIT_SECONDS)
                return
            time.sleep(POLL_SECONDS)

    def _still_running(self) -> bool:
        """The command, or anything it started, still runs (as of a new scan)."""
        command_running = self._popen is not None and self._popen.poll() is None
        self._scan()
        # The zombies of this scan: a process that exits later was running in it, and
        # is reaped on a later look. (A process that exits hands its children over at
        # once, so no zombie waits for a zombie parent.)
        self.reap(thorough=True)
        if self._table:
            return command_running or bool(self._running())
        return command_running or _group_alive(self._command.pid)

    def _signal_group(self, signum: int) -> bool:
        """Signal the command's group, while its id cannot be another group's; whether sent.

        The id is the command's pid, which stays reserved until the command is reaped.
        After that, with ``/proc`` the group's members are signalled one by one, each
        checked; without it, the group id is all there is.
        """
        if self._popen is None or (self._popen.returncode is not None and self._table):
            return False
        with contextlib.suppress(ProcessLookupError):  # the whole group has exited already
            os.killpg(self._command.pid, signum)
        return True

    def _scan(self) -> None:
        """Read the process table again and learn the processes new to the family."""
        self._table = table = _table()
        children: dict[int, list[Proc]] = {}
        for proc in table.values():
            children.setdefault(proc.ppid, []).append(proc)
        # Roots: this process's new children (the command, adopted orphans), the
        # command's group, and the known processes, wherever they were re-parented.
        todo = [p for p in children.get(self._me, []) if self._before.get(p.pid) != p.start]
        todo += [p for p in table.values() if self._in_group(p)]
        todo += [p for p in map(table.get, self._known) if p and p.start == self._known[p.pid]]
        family: dict[int, int] = {}
        while todo:
            proc = todo.pop()
            if proc.pid not in family:
                family[proc.pid] = proc.start
                todo += children.get(proc.pid, [])
        self._known = family  # the exited are forgotten: it stays as small as the family

    def _in_group(self, proc: Proc) -> bool:
        if proc.pgid != self._command.pid:
            return False
        # The group's id is the command's pid. While a group has members, its id
        # cannot be given to a new process; but once the group is empty it can, and a
        # new process with that pid would lead a different group of the same id.
        leader = self._table.get(self._command.pid)
        return leader is None or leader.start == self._command.start

    def _running(self) -> list[Proc]:
        """The known processes still running (as of the last scan), the command excepted."""
        found = (self._table.get(pid) for pid in self._known if pid != self._command.pid)
        return [p for p in found if p and p.running and p.start == self._known[p.pid]]

    def reap(self, thorough: bool = False) -> None:
        """Reap adopted orphans that have exited; never the command, nor older children.

        ``waitid(..., WNOWAIT)`` looks at an exited child without reaping it, so the
        command's exit status is left for ``Popen`` to collect. It is one system call,
        cheap enough for every turn of the wait loop. ``thorough`` also reaps the
        zombie children of the last scan, which it does not reach when the command's
        (or an older child's) exit comes first.
        """
        if not self.adopting:
            return
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # no children at all
                break
            if info is None or not self._reap(info.si_pid):
                break
        if thorough:
            for proc in self._table.values():
                if proc.ppid == self._me and not proc.running:
                    self._reap(proc.pid)

    def _reap(self, pid: int) -> bool:
        if pid == self._command.pid or pid in self._before:
            return False
        with contextlib.suppress(ChildProcessError):  # reaped already
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                log.debug("reaped process %d, a descendant of the command", pid)
        return True


def _send(proc: Proc, signum: int) -> None:
    """Signal ``proc`` if it is still that very process (same pid, same start time)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd (Linux < 5.3): check, then kill
        fd = -1
    try:
        now = _read(proc.pid)
        if now is None or now.start != proc.start:
            return  # exited, and its pid may already be another process's
        with contextlib.suppress(ProcessLookupError):
            if fd >= 0:
                signal.pidfd_send_signal(fd, signum)
            else:
                os.kill(proc.pid, signum)
    finally:
        if fd >= 0:
            os.close(fd)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member we may not signal (a setuid program) is still a member
    return True
