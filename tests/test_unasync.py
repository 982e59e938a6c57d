"""tools/unasync.py: the rules that write a sync module from its async source."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync", ROOT / "tools" / "unasync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["unasync"] = module
    spec.loader.exec_module(module)
    return module


SOURCE = '''import asyncio  # async only
from .aio_part import AsyncThing


class AsyncStore:
    """Uses an :class:`AsyncThing`; ``await store.step()``."""

    async def step(self) -> None:
        async with self.lock:
            await asyncio.sleep(0.1)
        async for item in self.items():
            await item.aclose()
        await self.thing.aclose()

    async def __aenter__(self) -> AsyncStore:
        return self
'''


def test_the_rules() -> None:
    names = {"AsyncStore": "Store", "AsyncThing": "Thing", ".aio_part": ".part"}
    out = _tool().unasync(SOURCE, names)
    assert "import asyncio" not in out  # lines marked async only are left out
    assert "from .part import Thing" in out
    assert "class Store:" in out
    assert "def step(self) -> None:" in out
    assert "with self.lock:" in out
    assert "time.sleep(0.1)" in out
    assert "for item in self.items():" in out
    assert "def __enter__(self) -> Store:" in out
    assert "await" not in out  # docstrings too: they describe the sync module
    assert ":class:`Thing`" in out  # docstrings follow the renames too
    assert "self.thing.aclose()" in out  # a name after a dot is never renamed


def test_every_generated_module_is_current() -> None:
    """What ./dev.sh lint checks, so a plain pytest run catches a stale module too."""
    tool = _tool()
    stale = [
        pair.target for pair in tool.PAIRS if (ROOT / pair.target).read_text() != tool.render(pair)
    ]
    assert stale == []
