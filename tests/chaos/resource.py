"""A protected resource that checks fencing tokens, shared by the chaos workers.

It stands for the database or file service a lock usually protects, doing what the
documentation asks of one: remember the largest fencing token it has accepted and
refuse a lower one. A write with the largest token itself is accepted (the same holder writing
again). Every attempt is appended to a log, accepted or not, so the run can check
afterwards that the resource never went backwards and count the refusals.

The state is a small file guarded by ``fcntl.flock``: one decision at a time across
processes, and the log's order is the order of the decisions.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Write:
    """One write attempt: ``token`` was ``accepted`` or refused at ``time`` by ``pid``."""

    token: int
    accepted: bool
    time: float  # time.monotonic(): one clock for every process of a Linux machine
    pid: int
    largest: int  # the largest token accepted before this attempt (0: none)


class Resource:
    """Largest accepted token in ``path``, every attempt in ``path.log``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = path.with_name(path.name + ".log")

    def write(self, token: int) -> bool:
        """Accept ``token`` if no larger one was accepted before; ``True`` if accepted."""
        with open(self.path, "a+") as state:
            fcntl.flock(state, fcntl.LOCK_EX)  # released when the file closes
            state.seek(0)
            text = state.read().strip()
            largest = int(text) if text else 0
            accepted = token >= largest
            if accepted and token > largest:
                state.seek(0)
                state.truncate()
                state.write(str(token))
                state.flush()
            attempt = Write(token, accepted, time.monotonic(), os.getpid(), largest)
            with open(self.log, "a") as log:
                log.write(json.dumps(attempt.__dict__) + "\n")
            return accepted

    def writes(self) -> list[Write]:
        """Every attempt so far, in the order the resource decided them."""
        if not self.log.exists():
            return []
        return [Write(**json.loads(line)) for line in self.log.read_text().splitlines()]


__all__ = ["Resource", "Write"]
