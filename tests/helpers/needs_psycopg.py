"""A store module whose driver may be missing (for the registry's error test)."""

from __future__ import annotations

import psycopg  # noqa: F401


class Store:
    pass
