"""Markdown tables for the benchmark scripts' output (shared by both scripts)."""

from __future__ import annotations


def table(headers: list[str], rows: list[list]) -> str:
    """A padded markdown table, readable in a terminal and pasteable into docs/benchmarks.md."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]

    def line(cells) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join(
        [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    )
