"""Markdown output of the benchmark: tables and the targets' check lines."""

from __future__ import annotations


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def check(ok: bool, text: str) -> str:
    return f"- [{'x' if ok else ' '}] {text}"


__all__ = ["check", "table"]
