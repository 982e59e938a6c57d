"""A stand-in for AWS Lambda's context object: just what remotelock looks at."""

from __future__ import annotations

import time


class FakeContext:
    """Counts down from ``remaining_ms`` in real time, like the real one."""

    def __init__(self, remaining_ms: int, function_name: str = "test-function") -> None:
        self.function_name = function_name
        self._deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
