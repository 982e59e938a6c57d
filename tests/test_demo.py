"""The quickstart's demo runs both scenarios and reports that both held."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.crossproc import ROOT

pytestmark = pytest.mark.slow


def test_demo(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "remotelock.demo",
            "--processes",
            "4",
            "--times",
            "30",
            "--stampede",
            "8",
            "--db",
            str(tmp_path / "locks.db"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"\| @remote_locked\s*\|\s*120 \|\s*120 \|\s*0 \|", out), out
    assert re.search(r"\| skip_if \+ cache\s*\|\s*8 \|\s*1 \|\s*8 / 8 \|", out), out
    assert re.search(r"\| single_flight\s*\|\s*8 \|\s*1 \|\s*8 / 8 \|", out), out
    assert "both held" in out


def test_cli_demo_entry_point_exists() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "remotelock", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0
    assert "--stampede" in result.stdout
