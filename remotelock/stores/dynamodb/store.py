"""DynamoDBStore: locks in a DynamoDB table, for AWS Lambda and anything else on AWS.

A Lambda reaches DynamoDB without a VPC, pays per request and runs no server, so this
is the store a serverless program needs. Each step is one conditional write (see
:mod:`remotelock.stores.dynamodb.expressions` for every request, its condition and its
answer); DynamoDB cannot push, so waiters poll (see :mod:`.waiting`).

Sync, with its asyncio twin in :mod:`remotelock.stores.dynamodb.aio` running the same
steps in worker threads, rather than an async source and a generated sync side over
aioboto3: boto3 is what Lambda's Python runtime already ships, its clients are
thread-safe, and a step is one short HTTPS request, so a worker thread per step in
flight costs little; aiobotocore would add a dependency pinned to exact botocore
versions (clashing with Lambda's bundled boto3 and with users' pins), and its client
API differs from boto3's in more than ``await``. The one long step, waiting, runs on
the event loop in the twin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import tenacity

from ...errors import StoreConfigError
from ..base import AsyncStore, LockInfo
from . import expressions as x
from .calls import Caller, Clients
from .client import check, parse_url
from .common import (
    CAPABILITIES,
    LOCK,
    Busy,
    Refusals,
    Refused,
    micros,
    now_us,
    number,
    strings,
    text,
)  # fmt: skip
from .permits import DynamoDBPermits
from .readers import ROUNDS, DynamoDBReaders
from .results import DynamoDBResults
from .table import Table
from .waiting import steps

if TYPE_CHECKING:
    from typing_extensions import Self

    from .aio import AsyncDynamoDBStore


class DynamoDBStore(DynamoDBReaders, DynamoDBResults, DynamoDBPermits):
    """Locks in a DynamoDB table: exclusion across processes, machines and Lambdas.

    - URL: ``dynamodb://TABLE?region=eu-west-1``; ``&endpoint_url=http://127.0.0.1:8000``
      for DynamoDB Local. Options (query or keywords): ``region``, ``endpoint_url``,
      ``profile`` (a profile of the AWS config files), ``timeout`` (seconds one step
      may take, throttling retries included; also the connect and read timeout of
      every request; default 5), ``skew`` (the clock-skew margin, default 0.1 s),
      ``poll`` and ``poll_max`` (a waiter's first and longest pause between reads,
      default 0.05 and 1 s; a lock's default ``wait=`` is 10 to 20 times
      ``poll_max``, since :meth:`wait` ends as soon as the key looks free), ``create``
      (create the table if missing, default true).
      Credentials come from boto3's usual chain (environment, profile, the Lambda
      role), or the keywords ``aws_access_key_id``, ``aws_secret_access_key``,
      ``aws_session_token``: never from a URL.
    - Or pass a client: ``DynamoDBStore("locks", client=boto3.client("dynamodb"))``;
      give it timeouts (``botocore.config.Config``): the store's own retries of
      throttling run on top of whatever the client does.
    - Table: partition key ``pk`` (String), no sort key, TTL on ``expires``. Created
      on first use if missing (on-demand billing, TTL enabled), idempotently when many
      processes start at once; a table made by infrastructure code is used as it is.
      One item per lock key (``lock:<key>``: ``token``, ``lease``, ``fence``,
      ``released``, and its shared leases: ``readers``, ``rfences``, ``rend``,
      ``mark``, ``rgone``, see :mod:`.reader_expressions`) and one per permit key
      (``permits:<key>``), each kept at least a day after its last lease (TTL), so
      fences keep growing across releases and expiries (one counter per key feeds
      exclusive and shared leases alike); a key whose item TTL deleted seeds its
      fence from the clock in microseconds, larger than any it handed out.
    - Clock: DynamoDB has no clock a condition can read, so **client clocks decide
      expiry**: a lease ends at the holder's wall-clock time plus ``ttl``, and another
      client takes the key only once its own clock is ``skew`` past that end. Set
      ``skew`` to the largest offset between your machines' clocks (AWS's time sync
      keeps EC2 and Lambda within a millisecond; NTP within tens). A clock off by more
      weakens exclusion for that long; fencing tokens still tell the holders apart.
      A holder judges its own lease by its own clock, with no margin.
    - Cost: acquire, release and extend are one write request each (1 write request
      unit; a refused conditional write costs the same); a holder renews about every
      ttl/3. Waiting is polled: see :mod:`remotelock.stores.dynamodb.waiting`.
      Shared leases (``acquire_shared`` and its kin) cost the same in the common
      case; a writer refused by readers costs 2 writes when it has to move the
      writers' mark (see :mod:`remotelock.stores.dynamodb.readers`).
    - Failures: see :mod:`remotelock.stores.dynamodb.calls` (throttling is retried
      within ``timeout``; network errors are :class:`~remotelock.errors.StoreUnavailable`;
      credentials, permissions and region are :class:`~remotelock.errors.StoreConfigError`).
    - Release: a repeated release by the token whose release freed the key returns
      ``True`` (until that token takes the key again or another token releases it),
      so a retry after a lost reply is not a loss; a token whose lease ran out, was
      taken over or force-released gets ``False``. Permits alike.
    """

    capabilities: frozenset[str] = CAPABILITIES

    def __init__(
        self,
        table: str,
        *,
        client: Any = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        timeout: float = 5.0,
        skew: float = 0.1,
        poll: float = 0.05,
        poll_max: float = 1.0,
        create: bool = True,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
    ) -> None:
        options = check(
            table=table, region=region, endpoint_url=endpoint_url, profile=profile,
            timeout=timeout, skew=skew, poll=poll, poll_max=poll_max, create=create,
        )  # fmt: skip
        credentials = {
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
        }
        credentials = {name: value for name, value in credentials.items() if value is not None}
        if client is not None and (credentials or region or endpoint_url or profile):
            raise StoreConfigError(
                "pass either a client or the settings to build one (region, endpoint_url, "
                "profile, credentials), not both"
            )
        self._clients = Clients(client, options, credentials)
        meta = getattr(self._clients.client, "meta", None)
        self.table = options.table
        self.region: str | None = getattr(meta, "region_name", None) or options.region
        self.endpoint_url: str | None = options.endpoint_url
        self.timeout = options.timeout
        self.skew = options.skew
        self.poll = options.poll
        self.poll_max = options.poll_max
        self.create = options.create
        # A refused acquire is a billed write, and wait() polls with cheaper reads
        # until the key looks free or the holder's lease ends: so a lock's default
        # wait lets wait() run 10-20 poll_max (10-20 s) before it tries again
        # regardless, instead of the 2-50 ms of stores whose tries cost nothing.
        self.default_wait: tenacity.wait.wait_base = tenacity.wait_random(
            min=10 * options.poll_max, max=20 * options.poll_max
        )
        self._skew_us = round(options.skew * 1_000_000)
        self._call = Caller(
            self, self._clients, Table(options.table), options.timeout, options.create
        )
        self._refusals = Refusals()
        self._twin: AsyncDynamoDBStore | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build a store (and its client) from a URL (see the class docs)."""
        own, rest = parse_url(url, options)
        return cls(**own._asdict(), **rest)

    @property
    def client(self) -> Any:
        """The boto3 DynamoDB client."""
        return self._clients.client

    # -- the Store protocol -------------------------------------------------------------

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """Take ``key`` if it is free, or its lease ran out, and no shared lease is live
        (one conditional write; a second when ``token`` holds it already: a fresh
        lease, the same fence; or when live readers refused it: the writers' mark, see
        :mod:`.readers`)."""
        for _ in range(ROUNDS):
            now = now_us()
            try:
                reply = self._call(
                    "acquire", key, x.take(key, token, micros(ttl), now, now - self._skew_us)
                )
            except Refused as refused:
                holder, lease = text(refused.item, "token"), number(refused.item, "lease") or 0
                if holder == token and lease > now:
                    return self._renew(key, token, ttl)
                if self._refused_by_readers(key, token, refused.item, now):
                    continue  # only readers whose leases ran out were in the way
                return None
            return number(reply["Attributes"], "fence")
        return None

    def _renew(self, key: str, token: str, ttl: float) -> int | None:
        try:
            reply = self._call("acquire", key, x.renew(key, token, micros(ttl), now_us()))
        except Refused:
            return None  # its lease ran out in the meantime: busy for now, try again
        return number(reply["Attributes"], "fence")

    def release(self, key: str, token: str) -> bool:
        """Free ``key`` if ``token`` holds an unexpired lease; ``True`` too for a repeated
        release by the token that freed it (see the class docs)."""
        try:
            self._call("release", key, x.release(key, token, now_us()))
        except Refused as refused:
            return (
                token in strings(refused.item, "released") and text(refused.item, "token") != token
            )
        return True

    def extend(self, key: str, token: str, ttl: float) -> bool:
        """Reset the lease if ``token`` still holds ``key`` (by its own clock)."""
        try:
            self._call("extend", key, x.extend(key, token, micros(ttl), now_us()))
        except Refused:
            return False
        return True

    def owner(self, key: str) -> str | None:
        """The token holding ``key`` (exclusively: readers are no owners), until its
        lease ended more than ``skew`` ago."""
        item = self._call("owner", key, x.holder(key)).get("Item") or {}
        lease = number(item, "lease")
        if lease is None or lease < now_us() - self._skew_us:
            return None
        return text(item, "token")

    def wait(self, key: str, timeout: float) -> None:
        """Poll until ``key`` looks free, its lease (or its readers' last lease) ends,
        plus ``skew``, or ``timeout``."""
        self._wait_on(LOCK + key, key, timeout, lambda: self._lock_busy(self._read(key)))

    def _read(self, key: str) -> dict[str, Any]:
        return self._call("wait", key, x.holder(key)).get("Item") or {}

    def _wait_on(
        self, slot: str, key: str, timeout: float, look: Callable[[], Busy | None]
    ) -> None:
        deadline = time.monotonic() + timeout
        busy = self._refusals.take(slot) or look()
        if busy is None:
            return
        plan = steps(busy, deadline, self.poll, self.poll_max)
        step = next(plan)
        while True:
            time.sleep(step.pause)
            if not step.poll:
                return
            busy = look()
            if busy is None:
                return
            step = plan.send(busy)

    # -- admin ----------------------------------------------------------------------------

    def force_release(self, key: str) -> bool:
        """Free ``key`` whoever holds it, readers too (and drop the writers' mark);
        ``True`` if an unexpired exclusive lease was there."""
        try:
            reply = self._call("force_release", key, x.force_release(key))
        except Refused:
            return False  # no item
        old = reply.get("Attributes") or {}
        return text(old, "token") is not None and (number(old, "lease") or 0) > now_us()

    def iter_locks(self, prefix: str = "") -> Iterator[LockInfo]:
        """The unexpired locks whose key starts with ``prefix`` (a Scan of the table:
        for operators, not for hot paths)."""
        found: list[LockInfo] = []
        start: dict[str, Any] | None = None
        now = now_us()
        while True:
            page = self._call("iter_locks", prefix, x.scan(prefix, start))
            for item in page.get("Items", []):
                lease, token = number(item, "lease") or 0, text(item, "token")
                if token is not None and lease > now:
                    key = (text(item, "pk") or "")[len(LOCK) :]
                    found.append(LockInfo(key, token, number(item, "fence"), (lease - now) / 1e6))
            start = page.get("LastEvaluatedKey")
            if not start:
                return iter(sorted(found, key=lambda info: info.key))

    # -- lifecycle --------------------------------------------------------------------------

    def as_async(self) -> AsyncStore:
        """The asyncio twin (the same on every call), sharing this store's client."""
        if self._twin is None:
            from .aio import AsyncDynamoDBStore

            self._twin = AsyncDynamoDBStore(self)
        return self._twin

    def close(self) -> None:
        """Close the client the store built (it builds another if used again); a
        client passed in is left open: it belongs to the caller."""
        self._clients.close()

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"{type(self).__name__}(table={self.table!r}, region={self.region!r}{where})"


__all__ = ["DynamoDBStore"]
