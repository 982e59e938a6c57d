"""Waiting in a test for something another thread or process brings about."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], bool], seconds: float, every: float = 0.02) -> bool:
    """Whether ``condition()`` becomes true within ``seconds`` (looked at ``every`` s)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True
