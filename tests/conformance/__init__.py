"""RemoteLock checked against the behaviour of ``threading.Lock`` (CPython's lock tests)."""

from __future__ import annotations
