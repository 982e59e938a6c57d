"""Fixtures of the store tests that look into PostgreSQL itself."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

    from tests.servers.postgres import PostgresServer


@pytest.fixture
def admin(postgres_server: PostgresServer) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection for looking at (and tampering with) the tables."""
    import psycopg

    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def table(admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A table of the test's own, dropped after it (with its permits table)."""
    from psycopg import sql

    from remotelock.stores.postgres.sql import permits_table

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    for dropped in (permits_table(name), name):
        admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(dropped)))
