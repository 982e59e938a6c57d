"""The examples run, and do what they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.crossproc import ROOT

EXAMPLES = ROOT / "examples"


def run(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_increment_shared_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    out = run("increment_shared_count.py", "--processes", "3", "--times", "20", env=env)
    assert "count = 60 (expected 60)" in out


def test_external_api_cache_calls_the_api_once(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    out = run("external_api_cache.py", "--workers", "6", env=env)
    assert "6 workers, 1 API call(s)" in out


def test_remote_lock_block() -> None:
    out = run("remote_lock_block.py")
    assert "ledger: ['first', 'second', 'third']" in out
