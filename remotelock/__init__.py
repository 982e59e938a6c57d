"""remotelock: "only one at a time" across processes and machines, for Python functions.

Only the names in ``__all__`` (here and in :mod:`remotelock.stores`) are public.
"""

from __future__ import annotations

from ._version import __version__
from .compat import make_remote_lock
from .config import configure
from .decorator import LockedSpec, remote_locked
from .errors import (
    FlightFailed,
    LimitConflict,
    LockLost,
    LockTimeout,
    RemoteLockError,
    ResultTooLarge,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
)
from .lease import Lease
from .lock import RemoteLock
from .single_flight import single_flight

__all__ = [
    "FlightFailed",
    "Lease",
    "LimitConflict",
    "LockLost",
    "LockTimeout",
    "LockedSpec",
    "RemoteLock",
    "RemoteLockError",
    "ResultTooLarge",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailable",
    "__version__",
    "configure",
    "make_remote_lock",
    "remote_locked",
    "single_flight",
]
