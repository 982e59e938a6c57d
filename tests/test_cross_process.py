"""Mutual exclusion across real processes: 8 x 200 read-modify-writes of one counter."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.crossproc import assert_exclusive, run_counter

pytestmark = pytest.mark.slow


def test_sqlite_counter_across_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/locks.db"
    final, sections = run_counter(url, "counter", tmp_path, processes=8, count=200)
    assert final == 1600
    assert len(sections) == 1600
    assert_exclusive(sections)
    assert len({section["pid"] for section in sections}) == 8
