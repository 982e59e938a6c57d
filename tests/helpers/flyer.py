"""Callers of one ``single_flight`` function in their own process, for the process tests.

With ``--together`` it prints ``{"event": "ready"}`` once everything is imported and
waits for a line on stdin (the test starts every process at once). Then each of
``--threads`` threads prints ``{"event": "calling"}``, calls the function once and
prints one JSON line: ``{"result": ...}`` or ``{"error": [type, message]}``.
Every run of the function appends this process's pid to ``--runs`` and, before it
returns, prints ``{"event": "running"}`` and sleeps ``--work`` seconds (``--work -1``:
forever, for a leader to be killed). ``--fail`` makes it raise ``ValueError``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from remotelock import single_flight
from remotelock.stores import store_from_url

_printing = threading.Lock()


def say(**fields: object) -> None:
    with _printing:  # one whole line at a time, whichever thread speaks
        print(json.dumps(fields), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--together", action="store_true")
    parser.add_argument("--work", type=float, default=1.0)
    parser.add_argument("--ttl", type=float, default=30.0)
    parser.add_argument("--result-ttl", type=float, default=0.0)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    store = store_from_url(args.url)

    @single_flight(args.key, store=store, ttl=args.ttl, result_ttl=args.result_ttl)
    def refresh() -> dict[str, object]:
        with args.runs.open("a") as runs:
            runs.write(f"{os.getpid()}\n")
        say(event="running")
        if args.work < 0:
            threading.Event().wait()
        time.sleep(args.work)
        if args.fail:
            raise ValueError(f"upstream said no ({os.getpid()})")
        return {"by": os.getpid(), "at": time.time()}

    def call() -> None:
        say(event="calling")
        try:
            say(result=refresh())
        except Exception as exc:  # reported, for the test to compare
            say(error=[type(exc).__name__, str(exc)])

    if args.together:
        say(event="ready")
        sys.stdin.readline()
    threads = [threading.Thread(target=call) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
