"""``remotelock ls [PREFIX] [--url URL] [--json]``: what is held now, for people and scripts.

One row per held lock and per permit holder: the key, ``lock`` or ``permit``, the
holder's token prefix, its fencing token, the seconds its lease has left and, for
permits, how many of the key's permits are held out of its limit. Where the store
keeps its waiters in line (Redis), the number waiting for each key. A table for
people; ``--json`` prints one JSON object per line (``null`` where the store does not
know), for scripts. The stores are asked through
:class:`~remotelock.stores.base.LockAdmin` and, where they offer them,
:class:`~remotelock.stores.listing.PermitAdmin` and
:class:`~remotelock.stores.listing.WaiterCount`: scans, for operators.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from .stores.base import LockAdmin
from .stores.listing import PermitAdmin, WaiterCount

HOLDER_CHARS = 8
"""How much of a holder's token is shown: enough to tell holders apart, never whole."""


@dataclass(frozen=True)
class Row:
    """One held lock or permit, as ``ls`` shows it."""

    key: str
    kind: str  # "lock" or "permit"
    holder: str
    fencing_token: int | None
    expires_in: float | None
    permits_held: int | None
    limit: int | None
    waiters: int | None


def rows(admin: LockAdmin, prefix: str) -> list[Row]:
    """Everything held under ``prefix`` in the store ``admin``, by key."""
    found = [
        Row(info.key, "lock", info.token[:HOLDER_CHARS], info.fencing_token,
            info.expires_in, None, None, None)
        for info in admin.iter_locks(prefix)
    ]  # fmt: skip
    if isinstance(admin, PermitAdmin):
        permits = list(admin.iter_permits(prefix))
        held = Counter(info.key for info in permits)
        found += [
            Row(info.key, "permit", info.token[:HOLDER_CHARS], info.fencing_token,
                info.expires_in, held[info.key], info.limit, None)
            for info in permits
        ]  # fmt: skip
    if isinstance(admin, WaiterCount):
        counts = {row.key: admin.waiting(row.key) for row in found if row.kind == "lock"}
        found = [
            replace(row, waiters=counts[row.key]) if row.kind == "lock" else row for row in found
        ]
    return sorted(found, key=lambda row: (row.key, row.kind))


def as_json(found: list[Row]) -> str:
    """One JSON object per row, one per line."""
    return "\n".join(json.dumps(asdict(row), sort_keys=True) for row in found)


def as_table(found: list[Row]) -> str:
    """A plain-text table (``nothing held`` when there is nothing)."""
    if not found:
        return "nothing held"
    headers = ["KEY", "KIND", "HOLDER", "FENCING TOKEN", "LEASE LEFT", "PERMITS", "WAITERS"]
    lines = [
        [
            row.key,
            row.kind,
            row.holder,
            "-" if row.fencing_token is None else str(row.fencing_token),
            "-" if row.expires_in is None else f"{row.expires_in:.1f} s",
            "-" if row.limit is None else f"{row.permits_held}/{row.limit}",
            "-" if row.waiters is None else str(row.waiters),
        ]
        for row in found
    ]
    widths = [max(len(cells[i]) for cells in [headers, *lines]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in [headers, *lines]
    )


def add_command(
    commands: Any, parents: list[argparse.ArgumentParser], handler: Callable[..., int]
) -> None:
    """Register ``ls`` with the CLI's subparsers (``handler`` runs it)."""
    ls = commands.add_parser(
        "ls",
        parents=parents,
        help="list held locks and permits",
        description="List the held locks and permit holders whose key starts with PREFIX "
        "(all of them by default): key, kind, holder token prefix, fencing token, lease "
        "left, permits held/limit and, where the store knows, how many wait. Exit status: "
        "0 if something is held, 1 if nothing is.",
    )
    ls.add_argument("prefix", metavar="PREFIX", nargs="?", default="", help="key prefix")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(handler=handler)


__all__ = ["HOLDER_CHARS", "Row", "add_command", "as_json", "as_table", "rows"]
