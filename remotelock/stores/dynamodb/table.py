"""The lock table, created on first use when it is missing.

The store never asks whether its table exists (that would cost every cold start a
request): a step that gets ``ResourceNotFoundException`` creates the table and runs
again. Creating is idempotent when many processes start at once: those that lose the
race get ``ResourceInUseException`` and wait with the winner until the table is
``ACTIVE``. Each then enables TTL on ``expires`` ("already enabled" is fine). A table
made by infrastructure code is used as it is, TTL or not.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final

from ...errors import StoreUnavailable
from .common import PARTITION_KEY, TTL_ATTRIBUTE, code_of, log

CREATE_WAIT: Final = 120.0
"""Seconds a first step waits for a new table to become ``ACTIVE`` (AWS takes a few)."""


class Table:
    """One table of one store: makes it once per process, and again if it vanishes
    (a restarted DynamoDB Local, a deleted table). Fences stay increasing either way:
    a new item seeds its fence from the clock."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._mutex = threading.Lock()
        self._made = 0.0  # when this process last made sure the table exists

    def make(self, client: Any, since: float) -> None:
        """Create the table (on-demand, TTL enabled) unless another thread did after
        ``since`` (a ``time.monotonic()`` value), and wait until it is ``ACTIVE``.

        :raises botocore.exceptions.ClientError: not allowed to create it.
        :raises StoreUnavailable: it did not become active within :data:`CREATE_WAIT`.
        """
        with self._mutex:
            if self._made > since:
                return
            self._create(client)
            self._made = time.monotonic()

    def _create(self, client: Any) -> None:
        import botocore.exceptions as bex

        try:
            client.create_table(
                TableName=self.name,
                AttributeDefinitions=[{"AttributeName": PARTITION_KEY, "AttributeType": "S"}],
                KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
            log.info("created the DynamoDB table %r (on-demand billing)", self.name)
        except bex.ClientError as exc:
            if code_of(exc) != "ResourceInUseException":  # made by another process: fine
                raise
        self._until_active(client)
        try:
            client.update_time_to_live(
                TableName=self.name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
        except bex.ClientError as exc:
            if not self._ttl_on(client):  # another process may have just enabled it
                log.warning(
                    "could not enable TTL on the DynamoDB table %r (items of unused keys "
                    "will stay): %s", self.name, exc,
                )  # fmt: skip

    def _ttl_on(self, client: Any) -> bool:
        import botocore.exceptions as bex

        try:
            found = client.describe_time_to_live(TableName=self.name)
        except bex.ClientError:
            return False
        status = found.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
        return status in ("ENABLED", "ENABLING")

    def _until_active(self, client: Any) -> None:
        deadline = time.monotonic() + CREATE_WAIT
        pause = 0.1
        while True:
            table = client.describe_table(TableName=self.name)["Table"]
            if table.get("TableStatus") == "ACTIVE":
                return
            if time.monotonic() + pause > deadline:
                raise StoreUnavailable(
                    f"the new DynamoDB table {self.name!r} did not become ACTIVE "
                    f"within {CREATE_WAIT:g} s"
                )
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


__all__ = ["CREATE_WAIT", "Table"]
