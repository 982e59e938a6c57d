"""URLs, options and boto3 clients for the DynamoDB store.

A boto3 client is built once per store (a few milliseconds once the process has one
session: sessions are kept per process and per credentials, since making one loads
the service model, about 0.1 s). The clients the store builds get connect and read
timeouts of ``timeout`` and no retries of botocore's own: the store retries throttling
itself, within the step's ``timeout`` (see :mod:`remotelock.stores.dynamodb.calls`).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import threading
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, unquote

from ...errors import StoreConfigError
from ..shared.redact import described, redact, split_url

_TABLE: Final = re.compile(r"[A-Za-z0-9_.\-]{3,255}")
_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}
CREDENTIALS: Final = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
"""Keyword options only: a URL ends up in logs and environment dumps."""


class Options(NamedTuple):
    """The store's options (URL query names and keyword arguments alike)."""

    table: str
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    timeout: float = 5.0
    skew: float = 0.1
    poll: float = 0.05
    poll_max: float = 1.0
    create: bool = True


_SECONDS: Final = {"timeout": (0.1, 300.0), "skew": (0.0, 60.0), "poll": (0.001, 60.0),
                   "poll_max": (0.001, 300.0)}  # fmt: skip
_TEXTS: Final = ("region", "endpoint_url", "profile")


def _seconds(name: str, value: object, url: str) -> float:
    low, high = _SECONDS[name]
    where = f" in {redact(url)!r}" if url else ""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise StoreConfigError(
                f"{name}{where} must be a number of seconds, got {redact(value)!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StoreConfigError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise StoreConfigError(f"{name}{where} must be {low:g}-{high:g} s, got {value!r}")
    return float(value)


def _flag(value: object, url: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise StoreConfigError(f"create in {redact(url)!r} must be true or false, got {value!r}")


def _endpoint(value: str) -> str:
    parts = split_url(value, "endpoint")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreConfigError(
            f"endpoint_url must be an http:// or https:// URL, got {redact(value)!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise StoreConfigError(
            f"endpoint_url {redact(value)!r} carries credentials; AWS requests are signed "
            "with credentials from the environment, a profile or keyword arguments"
        )
    return value


def check(**given: Any) -> Options:
    """Options from keyword values (text from a URL or typed values), checked."""
    url = str(given.pop("_url", ""))
    table = given.get("table")
    if not isinstance(table, str) or not _TABLE.fullmatch(table):
        raise StoreConfigError(
            "a DynamoDB table name is 3-255 letters, digits and _.- characters, got "
            f"{redact(table)!r}"
        )
    for name in _TEXTS:
        value = given.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise StoreConfigError(f"{name} must be a non-empty string, got {redact(value)!r}")
    if given.get("endpoint_url") is not None:
        _endpoint(given["endpoint_url"])
    for name in _SECONDS:
        if name in given:
            given[name] = _seconds(name, given[name], url)
    if "create" in given:
        given["create"] = _flag(given["create"], url)
    options = Options(**given)
    if options.poll_max < options.poll:
        raise StoreConfigError(
            f"poll_max ({options.poll_max:g} s) is below poll ({options.poll:g} s)"
        )
    return options


def parse_url(url: str, keywords: dict[str, Any]) -> tuple[Options, dict[str, Any]]:
    """``dynamodb://TABLE?region=...&endpoint_url=...`` plus keyword overrides, as
    (options, the keywords that are not options: a client, credentials)."""
    # redact() knows passwords, not AWS's names for secrets: hide those values too.
    query = parse_qsl(url.partition("?")[2], keep_blank_values=True)
    shown = redact(url, hiding={value for name, value in query if name in CREDENTIALS})
    parts = split_url(url, "DynamoDB")
    if parts.scheme.lower() != "dynamodb":
        raise StoreConfigError(f"not a dynamodb:// URL: {shown!r}")
    if "@" in parts.netloc:
        raise StoreConfigError(
            f"a dynamodb:// URL carries no credentials ({shown!r}); use the "
            "environment, a profile (?profile=NAME) or keyword arguments"
        )
    if parts.path not in ("", "/"):
        raise StoreConfigError(
            f"a dynamodb:// URL names only its table (dynamodb://TABLE?region=...), got {shown!r}"
        )
    given: dict[str, Any] = {"table": unquote(parts.netloc), "_url": shown}
    known = set(Options._fields) - {"table"}
    for name, value in query:
        if name in CREDENTIALS:
            raise StoreConfigError(
                f"{name} cannot be given in a URL ({shown!r}): URLs end up in logs; "
                "use the environment, a profile or a keyword argument"
            )
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise StoreConfigError(
                f"unknown dynamodb:// option {redact(name)!r} in {shown!r}{hint}"
            )
        given[name] = value
    rest = {}
    for name, value in keywords.items():
        if name in Options._fields:
            given[name] = value
        elif name in (*CREDENTIALS, "client"):
            rest[name] = value
        else:
            raise StoreConfigError(f"unknown dynamodb:// option {name!r}")
    return check(**given), rest


# -- sessions and clients ---------------------------------------------------------------------

_mutex = threading.Lock()
_sessions: dict[tuple[Any, ...], Any] = {}
_pid = os.getpid()


def _session(profile: str | None, credentials: dict[str, str | None]) -> Any:
    """This process's boto3 session for a profile and credentials (boto3's sessions
    are not thread-safe: callers hold the mutex)."""
    import boto3

    global _pid
    if _pid != os.getpid():  # forked: the parent's sessions hold its connections
        _sessions.clear()
        _pid = os.getpid()
    key = (profile, *sorted(credentials.items()))
    session = _sessions.get(key)
    if session is None:
        session = _sessions[key] = boto3.session.Session(profile_name=profile, **credentials)
    return session


def make_client(options: Options, credentials: dict[str, str | None]) -> Any:
    """A low-level DynamoDB client for ``options``.

    :raises StoreConfigError: unknown profile, no region, a malformed endpoint; raised
        in place of botocore's error, whose words are quoted redacted.
    """
    import botocore.exceptions as bex
    from botocore.config import Config

    config = Config(
        connect_timeout=options.timeout,
        read_timeout=options.timeout,
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=32,
        user_agent_extra="remotelock",
    )
    try:
        with _mutex:
            return _session(options.profile, credentials).client(
                "dynamodb",
                region_name=options.region,
                endpoint_url=options.endpoint_url,
                config=config,
            )
    except bex.NoRegionError:
        problem = (
            "no AWS region: add ?region=NAME to the URL, or set AWS_REGION / AWS_DEFAULT_REGION"
        )
    except (bex.BotoCoreError, ValueError) as exc:
        problem = described(exc)
    raise StoreConfigError(
        f"cannot build a DynamoDB client for table {options.table!r}: {problem}"
    )


__all__ = ["CREDENTIALS", "Options", "check", "make_client", "parse_url"]
