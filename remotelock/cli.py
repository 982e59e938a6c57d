"""The ``remotelock`` command line."""

from __future__ import annotations

import argparse
import logging
import sys

from ._version import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remotelock",
        description="Distributed locks for functions and shell commands.",
    )
    parser.add_argument("--version", action="version", version=f"remotelock {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser("demo", help="run the two flagship scenarios across real processes")
    demo.add_argument("--processes", type=int, default=8, help="counter processes (8)")
    demo.add_argument("--times", type=int, default=100, help="increments per process (100)")
    demo.add_argument("--stampede", type=int, default=20, help="stampede processes (20)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
    from . import demo

    return demo.main(args.processes, args.times, args.stampede)


__all__ = ["main"]
