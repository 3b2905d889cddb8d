"""Helpers for the rule tests: the inverse of compaction, to check that compaction keeps the meaning."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from coiled_jupyter.rules import Rule, canonical


def expand(rules: Iterable[Rule], *, max_ports: int = 16) -> list[Rule]:
    """A range of at most ``max_ports`` ports becomes one rule per port; wider ranges stay ranges."""
    out: list[Rule] = []
    for rule in rules:
        if rule.to_port - rule.from_port < max_ports:
            out.extend(
                replace(rule, from_port=p, to_port=p)
                for p in range(rule.from_port, rule.to_port + 1)
            )
        else:
            out.append(rule)
    return canonical(out)
