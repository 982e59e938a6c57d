"""Invoke the example Lambda handler once in this process, as one Lambda instance would.

Prints the handler's JSON response. The test starts many of these at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.helpers.lambda_context import FakeContext

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import lambda_handler


def main() -> int:
    print("ready", flush=True)
    sys.stdin.readline()
    response = lambda_handler.handler({"source": sys.argv[1]}, FakeContext(10_000))
    print(json.dumps(response), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
