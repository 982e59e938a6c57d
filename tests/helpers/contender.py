"""Contending processes for stress tests: acquire/release cycles on one key until a
deadline, straight on a store, counting every error instead of stopping at it.

One process imports everything, makes sure the table exists, then forks
``--processes`` contenders (forking skips the interpreter start-up of each, which
would otherwise take longer than the contention itself). Each builds its own store,
connects, and starts at the same moment as the others; each records its critical
sections (enter and exit by ``time.monotonic_ns``, one clock for every process on a
machine, and the fencing token), the errors it met by step, and how many releases
returned False. The parent prints all that as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from remotelock import StoreError
from remotelock.stores import store_from_url

START_AFTER = 2.0  # seconds for every child to connect before they all start


def contend(args: argparse.Namespace, start_at: float) -> dict[str, Any]:
    """One contender's run (in a forked child)."""
    store: Any = store_from_url(args.url)
    store.owner(args.key)  # connect before the start
    time.sleep(max(0.0, start_at - time.monotonic()))
    sections: list[dict[str, int]] = []
    errors: list[str] = []
    lost = attempts = 0
    deadline = start_at + args.seconds
    while time.monotonic() < deadline:
        token = uuid.uuid4().hex
        attempts += 1
        try:
            fence = store.acquire(args.key, token, 30)
        except StoreError as exc:
            errors.append(f"acquire: {type(exc).__name__}: {exc}")
            continue
        if fence is None:
            try:
                if args.wait:
                    store.wait(args.key, args.wait)
            except StoreError as exc:
                errors.append(f"wait: {type(exc).__name__}: {exc}")
            continue
        entered = time.monotonic_ns()
        time.sleep(args.hold)
        sections.append({"fence": fence, "enter": entered, "exit": time.monotonic_ns()})
        try:
            lost += not store.release(args.key, token)
        except StoreError as exc:
            errors.append(f"release: {type(exc).__name__}: {exc}")
    store.close()
    return {"sections": sections, "errors": errors, "lost": lost, "attempts": attempts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--hold", type=float, default=0.001, help="seconds inside a section")
    parser.add_argument("--wait", type=float, default=0.05, help="longest wait after 'busy'")
    args = parser.parse_args(argv)
    store: Any = store_from_url(args.url)
    store.owner(args.key)  # creates the table once, before the children start
    store.close()
    start_at = time.monotonic() + START_AFTER
    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for index in range(args.processes):
            out = Path(tmp) / f"{index}.json"
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    out.write_text(json.dumps(contend(args, start_at)))
                    code = 0
                finally:
                    os._exit(code)
            children.append((pid, out))
        reports: list[dict[str, Any]] = []
        for pid, out in children:
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                reports.append({"sections": [], "errors": ["crashed"], "lost": 0, "attempts": 0})
            else:
                reports.append(json.loads(out.read_text()))
    merged = {
        "sections": sorted(
            (section for report in reports for section in report["sections"]),
            key=lambda section: section["enter"],
        ),
        "errors": [error for report in reports for error in report["errors"]],
        "lost": sum(report["lost"] for report in reports),
        "attempts": sum(report["attempts"] for report in reports),
    }
    print(json.dumps(merged), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
