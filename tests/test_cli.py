"""The installed ``remotelock`` script, run in subprocesses against SQLite and Redis."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from remotelock import __version__, cli
from remotelock.stores.base import CROSS_PROCESS
from remotelock.stores.callable import CallableStore
from remotelock.supervise import ExitStatus
from tests.servers.redis import RedisServer, free_port

SCRIPT = Path(sys.executable).parent / "remotelock"
PYTHON = sys.executable

Spawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing: install the package (pip install -e .)")


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL for the script: a SQLite file of the test's own, or the test Redis."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/locks.db"  # tmp_path is absolute: sqlite:////...
    server: RedisServer = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=cli-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/locks.db"


def remotelock(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the script to completion."""
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start the script in the background; whatever is still running at the end is stopped."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()  # forwarded to the command, which then exits
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    """Wait until the command under ``proc`` has created ``path``."""
    deadline = time.monotonic() + 30
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"remotelock exited with {proc.returncode} first:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within 30 s")
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


def catches(pid: int, signum: int) -> bool:
    """The process has a handler for ``signum`` (Linux: the SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# A python command that sleeps holding the lock, after touching its "ready" file.
def sleeper(ready: Path, seconds: float = 30) -> list[str]:
    code = f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep({seconds})"
    return [PYTHON, "-c", code]


# -- running a command under the lock ----------------------------------------------------

COUNTER = """
import os, sys, time
from pathlib import Path

counter, inside, log, times = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
fd = os.open(inside, os.O_CREAT | os.O_EXCL)  # fails if another holder is inside
for _ in range(times):
    value = int(counter.read_text())
    time.sleep(0.002)  # between read and write: where an unlocked update gets lost
    counter.write_text(str(value + 1))
with log.open("a") as out:
    out.write(os.environ["REMOTELOCK_KEY"] + " " + os.environ["REMOTELOCK_FENCING_TOKEN"] + "\\n")
os.close(fd)
os.unlink(inside)
"""


def test_concurrent_runs_lose_no_update(url: str, key: str, tmp_path: Path, spawn: Spawn) -> None:
    counter, log = tmp_path / "counter.txt", tmp_path / "holders.log"
    counter.write_text("0")
    times = 20
    args = [str(counter), str(tmp_path / "inside"), str(log), str(times)]
    procs = [
        spawn("run", key, "--url", url, "--timeout", "60", "--", PYTHON, "-c", COUNTER, *args)
        for _ in range(6)
    ]
    results = [finish(proc) for proc in procs]
    assert [code for code, _, _ in results] == [0] * 6, results
    assert int(counter.read_text()) == 6 * times
    holders = [line.split() for line in log.read_text().splitlines()]
    assert [held_key for held_key, _ in holders] == [key] * 6
    fences = [int(fence) for _, fence in holders]
    assert fences == sorted(set(fences)), "each holder gets a larger fencing token"


def test_command_sees_key_and_fencing_token(url: str, key: str) -> None:
    show = "import os; print(os.environ['REMOTELOCK_KEY'], os.environ['REMOTELOCK_FENCING_TOKEN'])"
    first = remotelock("run", key, "--url", url, "--", PYTHON, "-c", show)
    second = remotelock("run", key, "--url", url, "--", PYTHON, "-c", show)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    (key1, fence1), (key2, fence2) = first.stdout.split(), second.stdout.split()
    assert key1 == key2 == key
    assert int(fence2) > int(fence1) > 0
    assert remotelock("status", key, "--url", url).stdout == "free\n"


def test_exit_status_is_the_commands(sqlite_url: str, key: str, tmp_path: Path) -> None:
    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return remotelock("run", key, "--url", sqlite_url, "--", *command)

    assert run(PYTHON, "-c", "raise SystemExit(7)").returncode == 7
    killed = run(PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert killed.returncode == 128 + signal.SIGKILL
    missing = run(str(tmp_path / "no-such-program"))
    assert missing.returncode == ExitStatus.NOT_FOUND
    assert "command not found" in one_line(missing.stderr)
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    denied = run(str(not_executable))
    assert denied.returncode == ExitStatus.CANNOT_EXECUTE
    assert "cannot execute" in one_line(denied.stderr)
    assert remotelock("status", key, "--url", sqlite_url).stdout == "free\n"


def test_verbose_logs_the_lock_steps(sqlite_url: str, key: str) -> None:
    result = remotelock("-v", "run", key, "--url", sqlite_url, "--", PYTHON, "-c", "pass")
    assert result.returncode == 0
    assert f"remotelock.lock DEBUG acquired lock {key!r}" in result.stderr
    assert f"remotelock.lock DEBUG released lock {key!r}" in result.stderr
    quiet = remotelock("run", key, "--url", sqlite_url, "--", PYTHON, "-c", "pass")
    assert quiet.stderr == ""


@pytest.mark.parametrize("from_env", [True, False], ids=["REMOTELOCK_URL", "embedded"])
def test_default_store(from_env: bool, key: str, tmp_path: Path) -> None:
    """Without --url: REMOTELOCK_URL, else the embedded SQLite file (in XDG_CACHE_HOME)."""
    env = dict(os.environ)
    if from_env:
        env["REMOTELOCK_URL"] = f"sqlite:///{tmp_path}/from-env.db"
        where = env["REMOTELOCK_URL"]
    else:
        env.pop("REMOTELOCK_URL", None)
        where = f"sqlite:///{env['XDG_CACHE_HOME']}/remotelock/locks.sqlite3"
    # The command asks the store it expects whether the lock is held: it must be.
    result = remotelock("run", key, "--", str(SCRIPT), "status", key, "--url", where, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("held by "), result.stdout


# -- losing the lock ------------------------------------------------------------------

FAMILY = """
import os, signal, subprocess, sys, time
from pathlib import Path

here = Path(sys.argv[1])
grandchild = subprocess.Popen([sys.executable, "-c", (
    "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"), str(here / "grandchild.ready")])
while not (here / "grandchild.ready").exists():
    time.sleep(0.01)
(here / "pids").write_text(f"{os.getpid()} {grandchild.pid}")
time.sleep(60)
"""


def test_lost_lock_stops_the_whole_process_group(
    url: str, key: str, tmp_path: Path, spawn: Spawn
) -> None:
    holder = spawn(
        "run", key, "--url", url, "--ttl", "1", "--grace", "1",
        "--", PYTHON, "-c", FAMILY, str(tmp_path),
    )  # fmt: skip
    wait_for(tmp_path / "pids", holder)
    child, grandchild = map(int, (tmp_path / "pids").read_text().split())
    status = remotelock("status", key, "--url", url)
    assert status.returncode == 0
    assert re.fullmatch(
        r"held by [0-9a-f]{8}, fencing token \d+, lease ends in \d+\.\d s\n", status.stdout
    ), status.stdout

    broken = remotelock("release", key, "--force", "--url", url)
    assert broken.returncode == 0
    assert broken.stdout == "released\n"
    assert "its holder may still be running" in one_line(broken.stderr)

    code, _, err = finish(holder)
    assert code == ExitStatus.LOCK_LOST, err
    assert f"lock {key!r} lost" in err
    assert "SIGTERM to its process group" in err
    assert "still running after 1 s: SIGKILL" in err  # the grandchild ignores SIGTERM
    deadline = time.monotonic() + 10
    while not (gone(child) and gone(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child), "the command survived the loss of its lock"
    assert gone(grandchild), "the command's grandchild survived the loss of its lock"


@pytest.mark.redis
def test_store_lost_while_running_stops_the_command(
    private_redis: RedisServer, key: str, tmp_path: Path, spawn: Spawn
) -> None:
    ready = tmp_path / "ready"
    holder = spawn("run", key, "--url", private_redis.url, "--ttl", "1", "--", *sleeper(ready))
    wait_for(ready, holder)
    private_redis.stop()
    code, _, err = finish(holder)
    assert code == ExitStatus.LOCK_LOST, err
    assert "could not be reached before the lease ran out" in err


# -- waiting, signals, store failures ---------------------------------------------------------


def test_waiter_times_out(url: str, key: str, tmp_path: Path, spawn: Spawn) -> None:
    ready = tmp_path / "ready"
    holder = spawn("run", key, "--url", url, "--", *sleeper(ready))
    wait_for(ready, holder)
    started = time.monotonic()
    waiter = remotelock("run", key, "--url", url, "--timeout", "0.5", "--", PYTHON, "-c", "pass")
    assert waiter.returncode == ExitStatus.TIMEOUT
    assert f"could not acquire lock {key!r}" in one_line(waiter.stderr)
    assert time.monotonic() - started >= 0.5
    once = remotelock("run", key, "--url", url, "--timeout", "0", "--", PYTHON, "-c", "pass")
    assert once.returncode == ExitStatus.TIMEOUT


TRAP = """
import pathlib, signal, sys, time
here = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    (here / "got").write_text(signal.Signals(signum).name)
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
(here / "ready").touch()
time.sleep(30)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signals_are_forwarded_and_the_lock_released(
    signum: signal.Signals, sqlite_url: str, key: str, tmp_path: Path, spawn: Spawn
) -> None:
    holder = spawn("run", key, "--url", sqlite_url, "--", PYTHON, "-c", TRAP, str(tmp_path))
    wait_for(tmp_path / "ready", holder)
    holder.send_signal(signum)
    code, _, err = finish(holder)
    assert code == 3, err  # the command's own status: it handled the signal
    assert (tmp_path / "got").read_text() == signum.name
    assert remotelock("status", key, "--url", sqlite_url).stdout == "free\n"


def test_signal_while_waiting_gives_up(
    sqlite_url: str, key: str, tmp_path: Path, spawn: Spawn
) -> None:
    ready = tmp_path / "ready"
    holder = spawn("run", key, "--url", sqlite_url, "--", *sleeper(ready))
    wait_for(ready, holder)
    waiter = spawn("run", key, "--url", sqlite_url, "--", PYTHON, "-c", "print('ran')")
    deadline = time.monotonic() + 30
    while not catches(waiter.pid, signal.SIGTERM):  # its handler is set just before waiting
        assert waiter.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.02)
    waiter.send_signal(signal.SIGTERM)
    code, out, _ = finish(waiter)
    assert code == 128 + signal.SIGTERM
    assert out == ""


def test_store_unavailable() -> None:
    down = f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=1&socket_timeout=1"
    run = remotelock("run", "k", "--url", down, "--", PYTHON, "-c", "print('ran')")
    assert run.returncode == ExitStatus.STORE_UNAVAILABLE
    assert run.stdout == ""
    assert one_line(run.stderr).startswith("remotelock: error: store unavailable: ")
    status = remotelock("status", "k", "--url", down)
    assert status.returncode == ExitStatus.STORE_UNAVAILABLE
    one_line(status.stderr)


# -- status and release ----------------------------------------------------------------


def test_status_and_release_of_a_free_lock(url: str, key: str) -> None:
    status = remotelock("status", key, "--url", url)
    assert (status.returncode, status.stdout, status.stderr) == (1, "free\n", "")
    release = remotelock("release", key, "--force", "--url", url)
    assert (release.returncode, release.stdout, release.stderr) == (1, "free\n", "")


def test_status_ignores_other_keys_with_the_same_prefix(
    sqlite_url: str, key: str, tmp_path: Path, spawn: Spawn
) -> None:
    ready = tmp_path / "ready"
    holder = spawn("run", f"{key}-longer", "--url", sqlite_url, "--", *sleeper(ready))
    wait_for(ready, holder)
    assert remotelock("status", key, "--url", sqlite_url).stdout == "free\n"


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    """main() configures the ``remotelock`` logger; other tests must not inherit that."""
    logger = logging.getLogger("remotelock")
    level, handlers = logger.level, list(logger.handlers)
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.usefixtures("_restore_logging")
def test_stores_without_admin_support_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def seed_store(url: str) -> CallableStore:
        return CallableStore(
            lambda request_id: None,
            lambda request_id, timeout: None,
            lambda request_id: None,
            capabilities={CROSS_PROCESS},
        )

    monkeypatch.setattr(cli, "store_from_url", seed_store)
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "k", "--url", "seed://"])
    assert exited.value.code == ExitStatus.USAGE
    assert "cannot inspect or break locks" in one_line(capsys.readouterr().err)


# -- usage --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice"),
        (["run", "k"], "no command given"),
        (["run", "k", "--"], "no command given"),
        (["run", "k", "true"], "the command to run goes after --"),
        (["run", "k", "--ttl", "-1", "--", "true"], "--ttl: must be a positive number"),
        (["run", "k", "--ttl", "0", "--", "true"], "--ttl: must be a positive number"),
        (["run", "k", "--ttl", "nan", "--", "true"], "--ttl: must be a finite number"),
        (["run", "k", "--timeout", "-0.5", "--", "true"], "--timeout: must be a number"),
        (["run", "k", "--grace", "soon", "--", "true"], "--grace: must be a number"),
        (["run", "k", "--limit", "0", "--", "true"], "--limit: must be a whole number >= 1"),
        (["run", "k", "--limit", "1.5", "--", "true"], "--limit: must be a whole number >= 1"),
        (["run", "", "--", "true"], "KEY: must not be empty"),
        (["run", "k", "--url", "nope://x", "--", "true"], "unknown store URL scheme 'nope'"),
        (["status", "k", "--url", "nope://x"], "unknown store URL scheme 'nope'"),
        (["status", "k", "--url", "redis://:pw@localhost/0?colour=blue"], "option 'colour'"),
        (["status", "k", "--url", "redis://localhost/zero"], "database number"),
        (["release", "k", "--force", "--url", "postgresql://h/db?colour=blue"], "'colour'"),
        (["status", "k", "--url", "redsi://:pw@localhost"], "did you mean redis://"),
        (["status", "k", "--url", "memory://"], "does not exclude other processes"),
        (["release", "k"], "add --force"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], says: str) -> None:
    result = remotelock(*args)
    assert result.returncode == ExitStatus.USAGE
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("remotelock: error: ")
    assert says in line
    assert ":pw@" not in line  # passwords are redacted


def test_limit_1_is_a_plain_lock(sqlite_url: str, key: str) -> None:
    result = remotelock("run", key, "--limit", "1", "--url", sqlite_url, "--", PYTHON, "-c", "")
    assert result.returncode == 0, result.stderr


CONCURRENCY = """
import os, sys, time
from pathlib import Path
inside, log = Path(sys.argv[1]), Path(sys.argv[2])
mine = inside / str(os.getpid())
mine.touch()
with log.open("a") as out:
    out.write(f"{len(list(inside.iterdir()))} {os.environ['REMOTELOCK_FENCING_TOKEN']}\\n")
time.sleep(0.4)
mine.unlink()
"""


def test_limit_n_runs_up_to_n_commands_at_once(
    url: str, key: str, tmp_path: Path, spawn: Spawn
) -> None:
    inside, log = tmp_path / "inside", tmp_path / "seen.log"
    inside.mkdir()
    procs = [
        spawn("run", key, "--limit", "3", "--url", url, "--", PYTHON, "-c", CONCURRENCY,
              str(inside), str(log))
        for _ in range(6)
    ]  # fmt: skip
    results = [finish(proc) for proc in procs]
    assert [code for code, _, _ in results] == [0] * 6, results
    seen = [line.split() for line in log.read_text().splitlines()]
    assert max(int(count) for count, _ in seen) == 3  # three at once, never four
    assert len({fence for _, fence in seen}) == 6  # each permit its own fencing token


def test_the_command_keeps_its_own_options_and_dashes(sqlite_url: str, key: str) -> None:
    echo = "import sys; print(sys.argv[1:])"
    result = remotelock(
        "run", key, "--url", sqlite_url, "--", PYTHON, "-c", echo, "--ttl", "-v", "--", "x"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "['--ttl', '-v', '--', 'x']\n"


@pytest.mark.parametrize("command", [[], ["run"], ["status"], ["release"], ["demo"]])
def test_help(command: list[str]) -> None:
    result = remotelock(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: {' '.join(['remotelock', *command])} ")
    if command == ["run"]:
        for status in ExitStatus:
            assert re.search(rf"^  {int(status)} ", result.stdout, re.MULTILINE), status


def test_exit_statuses_are_the_documented_ones() -> None:
    assert {status.name: int(status) for status in ExitStatus} == {
        "USAGE": 2,
        "STORE_UNAVAILABLE": 69,
        "TIMEOUT": 75,
        "LOCK_LOST": 79,
        "CANNOT_EXECUTE": 126,
        "NOT_FOUND": 127,
    }


def test_version() -> None:
    result = remotelock("--version")
    assert (result.returncode, result.stdout) == (0, f"remotelock {__version__}\n")
