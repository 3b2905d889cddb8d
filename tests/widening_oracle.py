"""What a rule set admits, and what one admits beyond another, independently of coiled_jupyter.rules.

A grant is ``(protocol, low, high, source)``: ``protocol`` ``tcp``, ``udp`` or ``all`` (AWS's
``-1``: every protocol and port), a port interval, and a source that is an ``ipaddress`` network or
a security group id. Only ``ipaddress`` and integer intervals are used here, so that a bug in the
project's own rule algebra (compaction, subtraction, parsing) cannot hide itself from this check.

:func:`excess` answers "which (port range, source) pairs does ``effective`` admit that ``allowed``
does not?": per protocol the port axis is cut at every boundary of either set, and on each piece
the networks admitted are collapsed and the allowed ones excluded with ``address_exclude``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

# "all" (AWS "-1") admits every protocol; as a set of grants it is tcp and udp on every port and the
# protocols without ports, which only another "all" grant admits.
_EVERY = (("tcp", 0, 65535), ("udp", 0, 65535), ("other", 0, 0))
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, order=True)
class Grant:
    protocol: str
    low: int
    high: int
    source: str  # a canonical network, a group id, or "me" (this notebook, not yet looked up)

    def __str__(self) -> str:
        ports = str(self.low) if self.low == self.high else f"{self.low}-{self.high}"
        return f"{self.protocol} {ports} from {self.source}"


def grant(protocol, low, high, source) -> list[Grant]:
    """One rule as grants: ``all`` becomes one grant per protocol; a network is made canonical
    (strictly: a network with host bits set is an error here, never silently widened)."""
    protocol = str(protocol).lower()
    source = str(source).strip()
    if not _named(source):
        source = str(ipaddress.ip_network(source))
    if protocol in ("all", "-1"):
        return [Grant(p, lo, hi, source) for p, lo, hi in _EVERY]
    if not 0 <= int(low) <= int(high) <= 65535:
        raise ValueError(f"bad port interval {low}-{high}")
    return [Grant(protocol, int(low), int(high), source)]


def _named(source: str) -> bool:
    """A source that is a name (a group id, ``me``), compared as a whole, not as addresses."""
    return source.startswith("sg-") or source == "me"


def grants(rules: Iterable) -> list[Grant]:
    """Grants of anything rule-shaped: ``Grant``, ``(protocol, low, high, source)`` tuples, text
    ``"tcp 8786-8787 10.0.0.0/8"``, or objects with ``protocol``/``from_port``/``to_port``/``source``
    (read as plain attributes, none of the project's methods)."""
    out: list[Grant] = []
    for rule in rules:
        if isinstance(rule, Grant):
            out.append(rule)
        elif isinstance(rule, str):
            protocol, ports, source = rule.split()
            low, _, high = ports.partition("-")
            if ports == "all":
                out.extend(grant("all", 0, 65535, source))
            else:
                out.extend(grant(protocol, int(low), int(high or low), source))
        elif isinstance(rule, tuple):
            out.extend(grant(*rule))
        else:
            out.extend(grant(rule.protocol, rule.from_port, rule.to_port, rule.source))
    return out


def from_aws(permissions: Iterable[dict]) -> list[Grant]:
    """Grants of a security group's ``IpPermissions`` as boto3 returns them."""
    out: list[Grant] = []
    for permission in permissions:
        protocol = permission["IpProtocol"]
        low, high = permission.get("FromPort", 0), permission.get("ToPort", 65535)
        sources = [r["CidrIp"] for r in permission.get("IpRanges", [])]
        sources += [r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])]
        sources += [r["GroupId"] for r in permission.get("UserIdGroupPairs", [])]
        for source in sources:
            out.extend(grant(protocol, low, high, source))
    return out


def _pieces(protocol: str, *sets: list[Grant]) -> list[tuple[int, int]]:
    """The port axis of one protocol cut at every boundary of every grant in ``sets``."""
    cuts = sorted(
        {b for s in sets for g in s if g.protocol == protocol for b in (g.low, g.high + 1)}
    )
    return list(zip(cuts, cuts[1:]))


def _sources(granted: list[Grant], protocol: str, low: int) -> tuple[list[Network], set[str]]:
    """Networks (collapsed, per family) and group ids admitted on ``protocol`` port ``low``."""
    here = [g for g in granted if g.protocol == protocol and g.low <= low <= g.high]
    groups = {g.source for g in here if _named(g.source)}
    networks: list[Network] = []
    for version in (4, 6):
        family = [ipaddress.ip_network(g.source) for g in here if not _named(g.source)]
        networks += ipaddress.collapse_addresses(n for n in family if n.version == version)
    return networks, groups


def _minus(network: Network, allowed: list[Network]) -> list[Network]:
    """The parts of ``network`` outside every allowed network."""
    left = [network]
    for cover in allowed:
        if cover.version != network.version:
            continue
        nxt: list[Network] = []
        for part in left:
            if part.subnet_of(cover):
                continue
            if cover.subnet_of(part):
                nxt.extend(part.address_exclude(cover))
            else:
                nxt.append(part)
        left = nxt
    return left


def excess(effective: Iterable, allowed: Iterable) -> list[Grant]:
    """Every (protocol, port range, source) that ``effective`` admits and ``allowed`` does not,
    with adjacent port pieces of one source joined; empty when nothing was widened."""
    eff, ok = grants(effective), grants(allowed)
    found: list[Grant] = []
    for protocol in sorted({g.protocol for g in eff}):
        for low, end in _pieces(protocol, eff, ok):
            nets, groups = _sources(eff, protocol, low)
            ok_nets, ok_groups = _sources(ok, protocol, low)
            extra = [str(n) for net in nets for n in _minus(net, ok_nets)]
            extra += sorted(groups - ok_groups)
            found.extend(Grant(protocol, low, end - 1, source) for source in extra)
    return _joined(found)


def _joined(found: list[Grant]) -> list[Grant]:
    out: list[Grant] = []
    for item in sorted(found, key=lambda g: (g.protocol, g.source, g.low)):
        last = out[-1] if out else None
        if last and (last.protocol, last.source) == (item.protocol, item.source):
            if item.low == last.high + 1:
                out[-1] = Grant(last.protocol, last.low, item.high, last.source)
                continue
        out.append(item)
    return out


def same_admission(one: Iterable, other: Iterable) -> tuple[list[Grant], list[Grant]]:
    """(what ``one`` admits beyond ``other``, what ``other`` admits beyond ``one``)."""
    one, other = grants(one), grants(other)
    return excess(one, other), excess(other, one)


def widened(effective: Iterable, before: Iterable, written: Iterable) -> list[Grant]:
    """What an accepted input left admitted that was neither admitted before it nor written by it."""
    return excess(effective, [*grants(before), *grants(written)])
