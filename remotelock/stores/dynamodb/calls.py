"""One request of a DynamoDB step: sent, retried where that is safe, and translated.

- Throttling (``ProvisionedThroughputExceededException``, ``ThrottlingException``,
  ``RequestLimitExceeded``) and DynamoDB's own 5xx answers are backpressure, not a
  lost lock: the request is sent again after a jittered, doubling pause (25 ms up to
  1 s), for as long as the step's ``timeout`` allows, then the step raises
  :class:`~remotelock.errors.StoreUnavailable`. An ``extend`` that is throttled is
  therefore never reported as a lost lease.
- A connection that broke before the answer came (a pooled connection the server or a
  frozen Lambda environment dropped) is retried once at once. Sending a step again is
  always safe: each request is idempotent for its token (see
  :mod:`remotelock.stores.dynamodb.expressions`). Timeouts are not retried: the
  budget is spent.
- A missing table is created (if the store may) and the request sent again.
- Everything else becomes a remotelock error naming the store, the step and the key:
  :class:`~remotelock.errors.StoreUnavailable` for the network,
  :class:`~remotelock.errors.StoreConfigError` for credentials, permissions, region or
  a table of another shape, :class:`~remotelock.errors.StoreError` otherwise. Messages
  pass through :func:`~remotelock.stores.shared.redact.redact`.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, Final

import botocore.exceptions as bex

from ..._checks import key_preview
from ...errors import RemoteLockError, StoreConfigError, StoreError, StoreUnavailable
from ..shared.redact import redact
from .client import Options, make_client
from .common import Refused, code_of
from .expressions import Request
from .table import Table

THROTTLED: Final = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "InternalFailure",
})  # fmt: skip
DENIED: Final = frozenset({
    "UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException",
    "MissingAuthenticationTokenException", "ExpiredTokenException", "InvalidClientTokenId",
    "IncompleteSignatureException", "SignatureDoesNotMatch", "UnauthorizedOperation",
})  # fmt: skip
_CONFIG: Final = (
    bex.NoCredentialsError, bex.PartialCredentialsError, bex.CredentialRetrievalError,
    bex.ProfileNotFound, bex.NoRegionError, bex.InvalidConfigError, bex.TokenRetrievalError,
)  # fmt: skip
_NETWORK: Final = (bex.ConnectionError, bex.HTTPClientError)
_BROKEN: Final = (bex.ConnectionClosedError, bex.EndpointConnectionError)
BACKOFF_FIRST: Final = 0.025
BACKOFF_MAX: Final = 1.0


def _status(exc: BaseException) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


class Clients:
    """The store's client: the one passed in, or one built from the options (again
    after ``close()`` or in a forked child, whose parent's connections are not its own)."""

    def __init__(self, client: Any, options: Options, credentials: dict[str, Any]) -> None:
        self.given = client
        self._options = options
        self._credentials = credentials
        self._client = client if client is not None else make_client(options, credentials)
        self._pid = os.getpid()

    @property
    def client(self) -> Any:
        if self.given is None and (self._client is None or self._pid != os.getpid()):
            self._client = make_client(self._options, self._credentials)
            self._pid = os.getpid()
        return self._client

    def close(self) -> None:
        """Close a client the store built (it builds another if used again)."""
        client, self._client = self._client, None
        if self.given is None and client is not None:
            client.close()
        elif self.given is not None:
            self._client = self.given


class Caller:
    """Sends the requests of one store (see the module docs)."""

    def __init__(
        self, owner: object, clients: Clients, table: Table, timeout: float, create: bool
    ) -> None:
        self.owner = owner
        self.clients = clients
        self.table = table
        self.timeout = timeout
        self.create = create

    def __call__(self, step: str, key: str, request: Request) -> dict[str, Any]:
        """The answer to ``request``.

        :raises Refused: its condition did not hold (with the item as it was).
        """
        started = time.monotonic()
        deadline = started + self.timeout
        tries, made, resent, backoff = 0, False, False, BACKOFF_FIRST
        while True:
            tries += 1
            client = self.clients.client
            try:
                send = getattr(client, request.operation)
                return send(TableName=self.table.name, **request.params)  # type: ignore[no-any-return]
            except bex.ClientError as exc:
                code = code_of(exc)
                if code == "ConditionalCheckFailedException":
                    raise Refused(exc.response.get("Item") or {}) from None
                if code == "ResourceNotFoundException" and self.create and not made:
                    made = True
                    self._make(step, key, client, started)
                    continue
                left = deadline - time.monotonic()
                if (code in THROTTLED or _status(exc) >= 500) and left > 0:
                    time.sleep(min(left, backoff * (0.5 + random.random() / 2)))
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                raise self.translated(step, key, exc, tries, time.monotonic() - started) from exc
            except _BROKEN as exc:
                if not resent and time.monotonic() < deadline:
                    resent = True
                    continue
                raise self.translated(step, key, exc, tries, time.monotonic() - started) from exc
            except bex.BotoCoreError as exc:
                raise self.translated(step, key, exc, tries, time.monotonic() - started) from exc

    def _make(self, step: str, key: str, client: Any, since: float) -> None:
        try:
            self.table.make(client, since)
        except (bex.ClientError, bex.BotoCoreError) as exc:
            error = self.translated(step, key, exc, 1, 0.0)
            if isinstance(error, StoreConfigError):
                error = StoreConfigError(
                    f"{error} (the table {self.table.name!r} does not exist and could not be "
                    "created: create it beforehand, or allow dynamodb:CreateTable, "
                    "dynamodb:DescribeTable and dynamodb:UpdateTimeToLive)"
                )
            raise error from exc

    def translated(
        self, step: str, key: str, exc: BaseException, tries: int, spent: float
    ) -> RemoteLockError:
        """The remotelock error for a driver's ``exc`` (see the module docs)."""
        code = code_of(exc)
        words = " ".join(redact(exc).split())
        where = f"{self.owner!r}: {step} {key_preview(key)}"
        table = self.table.name
        if isinstance(exc, _NETWORK):
            return StoreUnavailable(redact(f"{where}: {words}"))
        if isinstance(exc, _CONFIG):
            return StoreConfigError(redact(f"{where}: {type(exc).__name__}: {words}"))
        if code in DENIED:
            return StoreConfigError(
                redact(f"{where}: DynamoDB refused the credentials or permissions: {words}")
            )
        if code == "ResourceNotFoundException":
            return StoreConfigError(
                f"{where}: the DynamoDB table {table!r} does not exist (and create=false)"
            )
        lowered = words.lower()
        if code == "ValidationException" and (
            ("key" in lowered and "schema" in lowered) or "required keys" in lowered
        ):
            return StoreConfigError(
                f"{where}: the DynamoDB table {table!r} has another key schema; the store "
                "needs a String partition key named 'pk' and no sort key"
            )
        if code in THROTTLED or _status(exc) >= 500:
            return StoreUnavailable(
                redact(f"{where}: DynamoDB kept refusing ({code}) for {spent:.2f} s, "
                       f"{tries} tries: {words}")
            )  # fmt: skip
        return StoreError(redact(f"{where}: {words}"))


__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "DENIED", "THROTTLED", "Caller", "Clients"]
