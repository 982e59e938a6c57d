"""The conformance suites run on every store, and on Redis with barging too."""

from __future__ import annotations

import pytest

from tests.conftest import STORE_KINDS


@pytest.fixture(params=[*STORE_KINDS, pytest.param("redis_barging", marks=pytest.mark.redis)])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every store, and Redis with ``barging=``: a sync lock released and taken straight
    back is kept in its process (remotelock.streak), and each idiom must hold with that."""
    return str(request.param)
