"""Chaos safety run: the lock under network faults, across real processes."""

from __future__ import annotations
