"""remotelock: "only one at a time" across processes and machines, for Python functions.

Only the names in ``__all__`` (here and in :mod:`remotelock.stores`) are public.
"""

from __future__ import annotations

from ._version import __version__
from .compat import make_remote_lock
from .config import configure
from .decorator import LockedSpec, remote_locked
from .errors import (
    LimitConflict,
    LockLost,
    LockTimeout,
    RemoteLockError,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
)
from .lease import Lease
from .lock import RemoteLock

__all__ = [
    "Lease",
    "LimitConflict",
    "LockLost",
    "LockTimeout",
    "LockedSpec",
    "RemoteLock",
    "RemoteLockError",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailable",
    "__version__",
    "configure",
    "make_remote_lock",
    "remote_locked",
]
