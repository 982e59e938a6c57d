"""Network fault injection for store tests: a TCP proxy between client and server."""

from __future__ import annotations

from tests.faults.proxy import FaultProxy

__all__ = ["FaultProxy"]
