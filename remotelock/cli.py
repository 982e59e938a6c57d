"""The ``remotelock`` command line: argument parsing and one small function per command.

Each command is a thin wrapper: the store comes from :func:`store_from_url` (``--url``,
else the library's own resolution), ``status`` and ``release`` use the optional
:class:`~remotelock.stores.base.LockAdmin` abilities of the store, and ``run`` hands
the lock and the command to :mod:`remotelock.supervise`, which owns the process
handling. Exit statuses are listed in :class:`remotelock.supervise.ExitStatus`.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import config, demo, lister, supervise
from ._checks import check_key, check_ttl
from ._version import __version__
from .errors import LockTimeout, StoreConfigError, StoreError
from .lease import OnLost
from .lock import RemoteLock
from .stores import store_from_url
from .stores.base import CROSS_PROCESS, LockAdmin, LockInfo, PermitStore, Store
from .stores.shared.redact import described, redact
from .supervise import ExitStatus

log = logging.getLogger(__name__)


def _usage_error(message: str) -> NoReturn:
    """Exit with status 2 and one line on stderr: a cron or CI log stays readable.

    Redacted: the line may quote a store URL (a bad option, a mistyped scheme or an
    argument argparse did not recognise), and stderr ends up in logs.
    """
    sys.stderr.write(f"remotelock: error: {' '.join(redact(message).split())}\n")
    raise SystemExit(ExitStatus.USAGE)


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line instead of the usage text plus the error."""

    def error(self, message: str) -> NoReturn:
        _usage_error(f"{message} (see '{self.prog} --help')")


# -- option values --------------------------------------------------------------------


def _seconds(text: str, *, zero: bool = True) -> float:
    seconds = _number(text)
    if seconds < 0 or (seconds == 0 and not zero):
        least = "a number of seconds >= 0" if zero else "a positive number of seconds"
        raise argparse.ArgumentTypeError(f"must be {least}, got {text!r}")
    return seconds


def _ttl(text: str) -> float:
    try:
        return check_ttl(_seconds(text, zero=False))  # the library's own bounds
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text!r}")
    return value


def _holders(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return count


def _key(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    try:
        return check_key(text)  # the library's own limits (size, NUL, surrogates)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- stores -----------------------------------------------------------------------------


def _open_store(url: str | None) -> Store:
    """The store ``--url`` names; without one, ``REMOTELOCK_URL``, then the embedded SQLite.

    A third-party store may reject its configuration with a plain ``ValueError`` or
    ``TypeError``: that is bad usage too (status 2), not a crash with a traceback.
    """
    try:
        store = store_from_url(url) if url else config.resolve_store()
    except StoreConfigError:
        raise
    except (ValueError, TypeError) as exc:
        _usage_error(f"bad store configuration: {described(exc)}")
    if not isinstance(store, Store) or inspect.iscoroutinefunction(store.acquire):
        _usage_error(f"{store!r} is an async store; the command line needs a sync one")
    if CROSS_PROCESS not in store.capabilities:
        _usage_error(
            f"{store!r} does not exclude other processes, so other commands cannot see its "
            "locks; use a shared store such as sqlite:///path or redis://host"
        )
    return store


def _admin(store: Store) -> LockAdmin:
    if not isinstance(store, LockAdmin):
        _usage_error(f"{store!r} cannot inspect or break locks (it does not offer LockAdmin)")
    return store


# -- commands ---------------------------------------------------------------------------


def _lock_maker(args: argparse.Namespace) -> supervise.MakeLock:
    """How ``run`` holds the key: a lock, or one of ``--limit`` counted permits."""
    store = _open_store(args.url)
    if args.limit > 1 and not isinstance(store, PermitStore):
        _usage_error(f"--limit {args.limit}: {store!r} has no counted permits")

    def make(on_lost: OnLost) -> RemoteLock:
        return RemoteLock(args.key, store=store, ttl=args.ttl, limit=args.limit, on_lost=on_lost)

    return make


def _run(args: argparse.Namespace) -> int:
    if not args.command:
        _usage_error(
            "run: no command given; write it after --, as in: "
            "remotelock run KEY -- COMMAND [ARG ...]"
        )
    if not hasattr(os, "killpg"):
        _usage_error("run needs process groups, which this system does not have (POSIX only)")
    make_lock = _lock_maker(args)
    return supervise.run(
        make_lock,
        args.command,
        timeout=args.timeout,
        grace=args.grace,
        keep_descendants=args.keep_descendants,
    )


def _describe(info: LockInfo) -> str:
    fence = "unknown" if info.fencing_token is None else str(info.fencing_token)
    ends = "at an unknown time" if info.expires_in is None else f"in {info.expires_in:.1f} s"
    return f"held by {info.token[:8]}, fencing token {fence}, lease ends {ends}"


def _status(args: argparse.Namespace) -> int:
    for info in _admin(_open_store(args.url)).iter_locks(args.key):
        if info.key == args.key:  # iter_locks matches a prefix
            print(_describe(info))
            return 0
    print("free")
    return 1


def _release(args: argparse.Namespace) -> int:
    if not args.force:
        _usage_error(
            f"release breaks the lock whoever holds it, and that holder may still be "
            f"running; if {args.key!r} is really stuck, add --force"
        )
    if not _admin(_open_store(args.url)).force_release(args.key):
        print("free")
        return 1
    log.warning(
        "broke lock %r: its holder may still be running, and no longer excludes others",
        args.key,
    )
    print("released")
    return 0


def _ls(args: argparse.Namespace) -> int:
    found = lister.rows(_admin(_open_store(args.url)), args.prefix)
    print(lister.as_json(found) if args.json else lister.as_table(found))
    return 0 if found else 1


def _demo(args: argparse.Namespace) -> int:
    return demo.main(args.processes, args.times, args.stampede, args.db)


# -- parser -------------------------------------------------------------------------------


_ADMIN_COMMANDS: tuple[tuple[str, Any, str, str], ...] = (
    (
        "status",
        _status,
        "show who holds a lock",
        "Print 'free', or the holder's token prefix, the fencing token and the lease's "
        "remaining seconds. Exit status: 0 if held, 1 if free.",
    ),
    (
        "release",
        _release,
        "break a stuck lock (needs --force)",
        "Delete the lock KEY whoever holds it. The holder is not stopped and may still be "
        "running: only break a lock whose holder is known to be gone. Exit status: 0 if "
        "a lock was broken, 1 if it was free.",
    ),
)
"""The commands that look at (or break) one lock: name, handler, help, description."""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="remotelock",
        description="Distributed locks for functions and shell commands.",
    )
    parser.add_argument("--version", action="version", version=f"remotelock {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logs of remotelock on stderr"
    )
    # Also accepted after the command name; SUPPRESS keeps a top-level -v in force.
    verbose = _Parser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    store = _Parser(add_help=False)
    store.add_argument(
        "--url",
        help="store URL (default: $REMOTELOCK_URL, else the embedded SQLite file)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        parents=[store, verbose],
        help="run a command while holding a lock",
        usage="%(prog)s [options] KEY -- COMMAND [ARG ...]",
        description=supervise.RUN_HELP,
        epilog=supervise.EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("key", metavar="KEY", type=_key, help="the lock's name")
    run.add_argument(
        "--ttl",
        type=_ttl,
        default=30.0,
        metavar="S",
        help="lease length, renewed every S/3 while COMMAND runs; if remotelock dies, "
        "the lock is free again after at most S seconds (default: 30)",
    )
    run.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="wait at most S seconds for the lock, then exit with status "
        f"{ExitStatus.TIMEOUT} (default: 60; 0: try once)",
    )
    run.add_argument(
        "--limit",
        type=_holders,
        default=1,
        metavar="N",
        help="at most N holders of KEY at once (default: 1, a plain lock); every "
        "holder of one KEY must use the same N",
    )
    run.add_argument(
        "--grace",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="when stopping COMMAND and what it started (lock lost, or processes left "
        "running): seconds between SIGTERM and SIGKILL (default: 5)",
    )
    run.add_argument(
        "--keep-descendants",
        action="store_true",
        help="when COMMAND exits, leave the processes it left running alone (with a "
        "warning) instead of stopping them; they no longer hold the lock, so use this "
        "only for a COMMAND whose job is to start a long-lived service",
    )
    run.set_defaults(handler=_run)

    for name, handler, summary, description in _ADMIN_COMMANDS:
        admin = commands.add_parser(
            name, parents=[store, verbose], help=summary, description=description
        )
        admin.add_argument("key", metavar="KEY", type=_key, help="the lock's name")
        admin.set_defaults(handler=handler)
        if name == "release":
            admin.add_argument("--force", action="store_true", help="really break the lock")

    lister.add_command(commands, [store, verbose], _ls)
    show = commands.add_parser(
        "demo",
        parents=[verbose],
        help="run the two flagship scenarios across real processes",
        description="The demo of ./dev.sh demo: a shared counter and a stampede, on the "
        "embedded SQLite store.",
    )
    demo.add_arguments(show)
    show.set_defaults(handler=_demo)
    return parser


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """Take ``run``'s command (everything after the first ``--``) away from argparse.

    argparse's own ``--`` handling varies between Python versions and can mistake the
    command's options for ours; the command must reach ``exec`` exactly as written.
    The top-level options take no values, so the first word is the command name.
    """
    words = [arg for arg in argv if not arg.startswith("-")]
    if words[:1] != ["run"] or "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


class _Redacted(logging.Formatter):
    """Every line it writes redacted, tracebacks included: stderr ends up in logs."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _Brief(_Redacted):
    """``remotelock: warning: ...``, in the same shape as the usage errors."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"remotelock: {record.levelname.lower()}: {record.message}"


_handler: logging.Handler | None = None


def _configure_logging(verbose: bool) -> None:
    """WARNING and up from the ``remotelock`` loggers on stderr; DEBUG too with ``-v``."""
    global _handler
    logger = logging.getLogger("remotelock")
    if _handler is not None:  # main() called again in the same process
        logger.removeHandler(_handler)
    _handler = logging.StreamHandler()
    if verbose:
        _handler.setFormatter(_Redacted("%(asctime)s %(name)s %(levelname)s %(message)s"))
    else:
        _handler.setFormatter(_Brief())
    logger.addHandler(_handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (usage errors exit with 2)."""
    head, command = _split_command(list(sys.argv[1:] if argv is None else argv))
    args, extra = _parser().parse_known_args(head)
    if extra:
        hint = "; the command to run goes after --" if args.handler is _run else ""
        _usage_error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    args.command = command
    _configure_logging(args.verbose)
    handler: Any = args.handler
    try:
        return int(handler(args))
    except StoreConfigError as exc:
        _usage_error(str(exc))
    except LockTimeout as exc:
        log.error("%s", exc)
        return ExitStatus.TIMEOUT
    except KeyboardInterrupt:  # Ctrl-C outside `run`, which forwards it instead
        return supervise.SIGNAL_BASE + signal.SIGINT
    except StoreError as exc:
        # The driver's own words fit on a line; the full message names the store's
        # client in detail, which -v shows. Both redacted (so is every log line).
        log.debug("%s", redact(exc))
        log.error("store unavailable: %s", " ".join(redact(exc.__cause__ or exc).split()))
        return ExitStatus.STORE_UNAVAILABLE


__all__ = ["main"]
