"""Passwords out of every message: one helper for URLs, query strings and conninfo.

Store URLs and PostgreSQL connection strings often carry a password, and error
messages, logs and the command line's stderr end up in CI logs, bug reports and
monitoring. Every message that quotes a URL, a connection string or a driver's own
words about one passes through :func:`redact` first.

Structure finds the secrets (``scheme://user:PASSWORD@host``, ``?password=...``,
``password='...'``); each secret found is then also hidden wherever else it occurs
in the same text, raw or percent-decoded, because drivers echo fragments of what
they failed to parse (libpq: ``invalid percent-encoded token: "..."``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import SplitResult, unquote, unquote_plus, urlsplit

from ...errors import StoreConfigError

MASK: Final = "***"

_MIN_LITERAL: Final = 4
"""Shorter secrets are masked only where the structure shows them: hiding every
occurrence of a 1-3 character string would mask unrelated words and numbers."""

# Option names whose values are secrets: password, ssl_password, sslpassword,
# oauth_client_secret, scram_client_key, ...
_NAME: Final = r"(?:\w*(?:password|passwd|secret)\w*|scram_\w*key)"

# scheme://[user]:PASSWORD@host: the password runs to the last "@" before whitespace,
# so a raw "@", "/" or "?" in it is masked too (at worst a little too much is masked).
_USERINFO: Final = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#]*:)(?P<secret>\S*)(?=@)"
)
# ?password=... / &password=... in a URL's query string.
_QUERY: Final = re.compile(rf"(?P<head>[?&;]{_NAME}=)(?P<secret>[^&#\s]*)", re.IGNORECASE)
# password=... / password = '...' in a libpq conninfo string.
_CONNINFO: Final = re.compile(
    rf"(?P<head>(?<![\w?&;]){_NAME}\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'?|\S*)",
    re.IGNORECASE,
)
# 'password': '...' (a dict's repr) and password="..." (a repr of keyword arguments).
_QUOTED: Final = re.compile(
    rf"(?P<head>['\"]?{_NAME}['\"]?\s*[:=]\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")",
    re.IGNORECASE,
)
_PATTERNS: Final = (_USERINFO, _QUERY, _QUOTED, _CONNINFO)


def secrets_in(text: str) -> set[str]:
    """The secrets ``text`` carries where its structure shows them, in every spelling
    a driver might echo: as written, percent-decoded, unquoted."""
    found: set[str] = set()
    for pattern in _PATTERNS:
        for match in pattern.finditer(text):
            raw = match["secret"]
            if raw[:1] in ("'", '"'):
                raw = raw[1:-1] if len(raw) > 1 and raw[-1] == raw[0] else raw[1:]
                found.add(re.sub(r"\\(.)", r"\1", raw))
            found.update((raw, unquote(raw), unquote_plus(raw)))
    found.discard("")
    return found


def redact(text: object, *, hiding: Iterable[str] = ()) -> str:
    """``text`` (a URL, a conninfo string, any message) with its secrets masked.

    :param hiding: more secrets to mask wherever they occur, e.g. ``secrets_in(url)``
        when ``text`` is a driver's complaint about ``url``.

    .. code-block:: python

        redact("redis://app:s3cr3t@cache:6379/0")  # 'redis://app:***@cache:6379/0'
    """
    result = str(text)
    secrets = secrets_in(result) | set(hiding)
    for pattern in _PATTERNS:
        result = pattern.sub(lambda match: f"{match['head']}{MASK}", result)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_LITERAL:
            result = result.replace(secret, MASK)
    return result


def described(exc: BaseException, *, hiding: Iterable[str] = ()) -> str:
    """A driver's exception as ``TypeName: message``, redacted, on one line.

    For errors raised in place of the driver's (not chained from it) when its
    message may quote a URL or a connection string.
    """
    words = " ".join(redact(exc, hiding=hiding).split())
    return f"{type(exc).__name__}: {words}" if words else type(exc).__name__


def split_url(url: str, what: str) -> SplitResult:
    """``urlsplit(url)``; a malformed URL (``[::1`` host) is a :class:`StoreConfigError`
    with the URL redacted, instead of ``urlsplit``'s bare ``ValueError``."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        problem = described(exc, hiding=secrets_in(url))
    raise StoreConfigError(f"malformed {what} URL {redact(url)!r}: {problem}")


__all__ = ["MASK", "described", "redact", "secrets_in", "split_url"]
