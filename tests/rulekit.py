"""Helpers for the rule tests: the inverse of compaction, to check that compaction keeps the meaning,
and a hypothesis strategy for networks of either family, of any size, anywhere."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import replace

from hypothesis import strategies as st

from coiled_jupyter.rules import Rule, canonical


@st.composite
def any_network(draw) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IPv4 or IPv6 network in canonical form (host bits cleared)."""
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(0, bits))
    address = draw(st.integers(0, 2**bits - 1))
    kind = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return kind((address, prefix), strict=False)


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
