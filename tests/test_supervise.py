"""``remotelock run`` and the processes a command daemonises, on real processes (Linux).

A daemonised grandchild (``setsid`` and a double fork) leaves the command's process
group and loses its parent, so signalling the group cannot reach it: remotelock, a
child subreaper, adopts it and stops it. Each scenario runs the installed script
under a small *witness*: a subreaper of its own that waits for remotelock and then
lists the children it inherited. A zombie that remotelock failed to reap, or a
process it left running, is re-parented to the witness when remotelock exits, and
shows up in that list; with init as the next reaper it would vanish unseen.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from remotelock import _descendants, supervise
from remotelock.lease import OnLost
from remotelock.lock import RemoteLock
from remotelock.stores.sqlite.store import SQLiteStore
from remotelock.supervise import ExitStatus
from tests.helpers.eventually import eventually

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="child subreapers and /proc are Linux's"
)

SCRIPT = Path(sys.executable).parent / "remotelock"
PYTHON = sys.executable

# Generous bounds: two shared cores may be slow to start a Python process.
STARTUP = 60.0
MARGIN = 30.0

# The command. It double-forks a daemon (new session, parent gone, stdio on
# /dev/null), waits until the daemon has written its pid, then does as ``then`` says:
# "stay" (sleep), "exit" (exit 0 at once) or "wait" (until the file "stop" appears).
# The daemon, on SIGTERM: "ignore" it, or "report" whether the lock is held (through
# `remotelock status`) and exit; "quit" exits at once, without waiting for a signal.
DAEMONISE = """
import os, signal, subprocess, sys, time
from pathlib import Path

here, then, daemon, url = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

def report(signum, frame):
    status = subprocess.run(
        [sys.argv[5], "status", os.environ["REMOTELOCK_KEY"], "--url", url],
        capture_output=True, text=True, check=False,
    )
    (here / "seen-at-sigterm").write_text(status.stdout)
    os._exit(0)

middle = os.fork()
if middle == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if daemon == "ignore":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif daemon == "report":
            signal.signal(signal.SIGTERM, report)
        (here / "daemon.tmp").write_text(str(os.getpid()))
        os.rename(here / "daemon.tmp", here / "daemon.pid")
        if daemon != "quit":
            time.sleep(300)
        os._exit(0)
    os._exit(0)
os.waitpid(middle, 0)
while not (here / "daemon.pid").exists():
    time.sleep(0.01)
(here / "ready").touch()
if then == "stay":
    time.sleep(300)
while then == "wait" and not (here / "stop").exists():
    time.sleep(0.02)
"""

# The witness: a child subreaper that runs remotelock, waits for it (and it alone),
# then prints remotelock's exit status and the children it was left with.
WITNESS = """
import ctypes, json, os, subprocess, sys

if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
    sys.exit("the witness cannot be a child subreaper")
status = subprocess.call(sys.argv[1:])
left = {}
for name in os.listdir("/proc"):
    try:
        with open(f"/proc/{name}/stat") as file:
            fields = file.read().rpartition(")")[2].split()
    except (OSError, ValueError):
        continue
    if name.isdigit() and int(fields[1]) == os.getpid():
        left[name] = fields[0]
print(json.dumps({"status": status, "left": left}))
"""


def stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name; None once reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def gone(pid: int) -> bool:
    """The process has exited (a zombie not reaped yet counts as gone)."""
    fields = stat(pid)
    return fields is None or fields[0] in ("Z", "X")


def children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        fields = stat(int(name)) if name.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            found.append(int(name))
    return found


class Witnessed:
    """``remotelock`` started under the witness, in the background."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.here = tmp_path
        self.proc = subprocess.Popen(
            [PYTHON, "-c", WITNESS, str(SCRIPT), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> int:
        """Wait for the command's daemon; its pid."""
        if not eventually(
            lambda: (self.here / "ready").exists() or self.proc.poll() is not None, STARTUP
        ):
            pytest.fail(f"the command was not ready within {STARTUP} s")
        if self.proc.poll() is not None:
            out, err = self.proc.communicate()
            pytest.fail(f"the witness exited with {self.proc.returncode} first:\n{out}\n{err}")
        return int((self.here / "daemon.pid").read_text())

    def remotelock_pid(self) -> int:
        (pid,) = children(self.proc.pid)
        return pid

    def finish(self) -> tuple[int, dict[int, str], str]:
        """remotelock's exit status, the children left to the witness, remotelock's stderr."""
        out, err = self.proc.communicate(timeout=STARTUP + MARGIN)
        assert self.proc.returncode == 0, err
        report: dict[str, Any] = json.loads(out.splitlines()[-1])
        return report["status"], {int(pid): state for pid, state in report["left"].items()}, err


@pytest.fixture
def witnessed(tmp_path: Path) -> Iterator[Callable[..., Witnessed]]:
    """Start remotelock under the witness; whatever is left running at the end is killed."""
    started: list[Witnessed] = []

    def start(*args: str) -> Witnessed:
        started.append(Witnessed(tmp_path, *args))
        return started[-1]

    yield start
    for run in started:
        tree, todo = [], [run.proc.pid]
        while todo:
            tree += todo
            todo = [child for pid in todo for child in children(pid)]
        for pid in reversed(tree):
            with_pid_kill(pid)
        run.proc.communicate()
    daemon = tmp_path / "daemon.pid"
    if daemon.exists():
        pid = int(daemon.read_text())
        try:
            mine = str(tmp_path) in Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:
            mine = False
        if mine:  # the pid is the daemon's, not a stranger's that reused it
            with_pid_kill(pid)


def with_pid_kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/locks.db"


def remotelock(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def command(tmp_path: Path, then: str, daemon: str, url: str) -> list[str]:
    return [PYTHON, "-c", DAEMONISE, str(tmp_path), then, daemon, url, str(SCRIPT)]


# -- the lock is lost ---------------------------------------------------------------


def test_lost_lock_stops_a_daemonised_grandchild(
    witnessed: Callable[..., Witnessed], url: str, key: str, tmp_path: Path
) -> None:
    ttl, grace = 1, 1
    run = witnessed(
        "run", key, "--url", url, "--ttl", str(ttl), "--grace", str(grace),
        "--", *command(tmp_path, "stay", "ignore", url),
    )  # fmt: skip
    daemon = run.wait_ready()
    # Its parent gone, the daemon was adopted by remotelock (not by the witness or init).
    assert int((stat(daemon) or ["", "0"])[1]) == run.remotelock_pid()

    assert remotelock("release", key, "--force", "--url", url).returncode == 0
    # The daemon ignores SIGTERM: it is gone once the loss is noticed (within the ttl)
    # and the grace period has passed.
    assert eventually(lambda: gone(daemon), ttl + grace + MARGIN), "the daemon survived"

    status, left, err = run.finish()
    assert status == ExitStatus.LOCK_LOST, err
    assert "SIGTERM to its process group" in err
    assert "and 1 process it started" in err
    assert "still running after 1 s: SIGKILL" in err
    assert left == {}, f"remotelock left these children (Z: unreaped zombie): {left}"
    assert stat(daemon) is None  # reaped, not a zombie


# -- the command exits, its daemon still running ------------------------------------


def test_exit_stops_the_daemon_before_releasing_the_lock(
    witnessed: Callable[..., Witnessed], url: str, key: str, tmp_path: Path
) -> None:
    run = witnessed(
        "run", key, "--url", url, "--grace", "60",
        "--", *command(tmp_path, "exit", "report", url),
    )  # fmt: skip
    status, left, err = run.finish()
    daemon = int((tmp_path / "daemon.pid").read_text())
    assert status == 0, err  # the command's own status
    assert gone(daemon), "the daemon outlived remotelock"
    assert left == {}, f"remotelock left these children (Z: unreaped zombie): {left}"
    # The daemon was asked to stop while the lock was still held, not after.
    assert (tmp_path / "seen-at-sigterm").read_text().startswith("held by "), err
    assert "leaving 1 process running: stopping it before releasing the lock" in err
    assert "still running after" not in err  # it exited on SIGTERM, no SIGKILL needed
    assert remotelock("status", key, "--url", url).stdout == "free\n"


def test_keep_descendants_leaves_the_daemon_running(
    witnessed: Callable[..., Witnessed], url: str, key: str, tmp_path: Path
) -> None:
    run = witnessed(
        "run", key, "--url", url, "--keep-descendants",
        "--", *command(tmp_path, "exit", "ignore", url),
    )  # fmt: skip
    status, left, err = run.finish()
    daemon = int((tmp_path / "daemon.pid").read_text())
    assert status == 0, err
    assert "leaving 1 process running, which no longer hold the lock" in err
    # Still running, handed on to the witness when remotelock exited.
    assert list(left) == [daemon], left
    assert left[daemon] not in ("Z", "X")
    assert remotelock("status", key, "--url", url).stdout == "free\n"


def test_orphans_that_exit_while_the_command_runs_are_reaped(
    witnessed: Callable[..., Witnessed], url: str, key: str, tmp_path: Path
) -> None:
    run = witnessed("run", key, "--url", url, "--", *command(tmp_path, "wait", "quit", url))
    daemon = run.wait_ready()
    # Adopted by remotelock, then exited: reaped right away, not left a zombie until
    # the command ends.
    assert eventually(lambda: stat(daemon) is None, MARGIN), stat(daemon)
    (tmp_path / "stop").touch()
    status, left, err = run.finish()
    assert status == 0, err
    assert left == {}
    assert err == ""  # nothing was left running


# -- without a subreaper ------------------------------------------------------------

FAMILY = """
import os, signal, subprocess, sys, time
from pathlib import Path

here = Path(sys.argv[1])
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
member = subprocess.Popen([sys.executable, "-c", stubborn])  # stays in the group
detached = subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True)
time.sleep(1)  # let both set their SIGTERM handling
(here / "pids").write_text(f"{os.getpid()} {member.pid} {detached.pid}")
time.sleep(300)
"""


def test_without_a_subreaper_the_group_is_still_stopped(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    key: str,
) -> None:
    """Where prctl is missing or refused: the process group, and the descendants still
    attached to the command's tree when the loss is noticed, are stopped."""
    monkeypatch.setattr(_descendants, "become_subreaper", lambda: False)
    caplog.set_level(logging.DEBUG, logger="remotelock")
    store = SQLiteStore(tmp_path / "locks.db")

    def make_lock(on_lost: OnLost) -> RemoteLock:
        return RemoteLock(key, store=store, ttl=1, on_lost=on_lost)

    def break_the_lock() -> None:
        if eventually((tmp_path / "pids").exists, STARTUP):
            SQLiteStore(tmp_path / "locks.db").force_release(key)

    breaker = threading.Thread(target=break_the_lock, daemon=True)
    breaker.start()
    status = supervise.run(make_lock, [PYTHON, "-c", FAMILY, str(tmp_path)], timeout=10, grace=1)
    breaker.join()
    pids = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
    try:
        assert status == ExitStatus.LOCK_LOST
        assert eventually(lambda: all(map(gone, pids)), MARGIN), [stat(pid) for pid in pids]
        assert "cannot be a child subreaper here" in caplog.text
        assert not _descendants._is_subreaper()
    finally:
        for pid in pids:
            with_pid_kill(pid)


def test_run_in_process_gives_the_subreaper_setting_back(tmp_path: Path, key: str) -> None:
    store = SQLiteStore(tmp_path / "locks.db")
    status = supervise.run(
        lambda on_lost: RemoteLock(key, store=store, on_lost=on_lost),
        [PYTHON, "-c", "raise SystemExit(3)"],
        timeout=10,
        grace=1,
    )
    assert status == 3
    assert not _descendants._is_subreaper()
