"""Ingress rules: parsing, validation, canonical form and compaction.

The format is Coiled's: a list of ``{"ports": [...], "cidr": "..."}`` dicts, from Python objects or from
YAML text. People also type a single port, a range ``"8000-8100"``, IPv6 networks, a bare address
(``203.0.113.7`` means ``/32``), ``everyone`` and ``me``, and may add ``protocol`` (``tcp`` by default,
or ``udp``) and ``description``.

Decisions (see README, "Rule format"):

* Ports are integers. A string of digits (``"8786"``) or a range string (``"8000-8100"``) is accepted
  because YAML, JSON and magics all produce strings for ranges; ``True`` and floats are refused, since
  ``True == 1`` would silently open port 1.
* A network with host bits set (``10.1.0.2/16``) is refused rather than masked. AWS masks it to
  ``10.1.0.0/16``, which admits 65,536 addresses where the person may have meant one; a firewall tool
  must not widen access by guessing. The sentence offers both readings.
* ``everyone`` means ``0.0.0.0/0`` and ``::/0``. Rules open to the whole internet are allowed (it is
  Coiled's default) but reported by :func:`open_to_everyone`.

Every mistake gets one sentence naming the value and the fix; all sentences of one input are raised
together in one :class:`IngressError`, and nothing is returned for a partly valid input.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from .errors import CoiledJupyterError
from .strict_yaml import excerpt

PROTOCOLS = ("tcp", "udp")
# AWS's protocol "-1": every protocol and port; only read from the cloud or used for the self rule.
ALL_PROTOCOLS = "all"
ALLOWED_KEYS = ("ports", "cidr", "protocol", "description")
EVERYONE = "everyone"
ME = "me"
EVERYONE_NETWORKS = ("0.0.0.0/0", "::/0")
DESCRIPTION_MAX = 255
# What AWS accepts in a security group rule description.
_DESCRIPTION_OK = re.compile(r"^[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]*$")
_GROUP_ID = re.compile(r"^sg-[0-9a-f]{8}([0-9a-f]{9})?$")
# ASCII digits only, and few of them: str.isdigit() also accepts '²', which int() refuses, and int()
# refuses more than 4300 digits.
_NUMBER = re.compile(r"[0-9]{1,10}")
_RANGE = re.compile(r"^\s*([0-9]{1,10})\s*-\s*([0-9]{1,10})\s*$")
# '0022' is 18 in YAML 1.1 and 22 to int(): refused everywhere alike, with the reading to write.
_LEADING_ZERO = re.compile(r"0[0-9]+")
# '1:30' is 90 in YAML 1.1 (base 60); people mean the range 1-30.
_SEXAGESIMAL = re.compile(r"([0-9]{1,5}):([0-9]{1,5})")
# A security group holds at most 1,000 rules (AWS's highest quota): more entries, or rules a
# ports x cidr product expands into, are refused before any of them is parsed.
MAX_RULES = 1000


class IngressError(CoiledJupyterError, ValueError):
    """A value a person wrote is not valid; the message says which value and how to fix it."""


@dataclass(frozen=True, order=True)
class Rule:
    """One rule: a protocol, a port range and one source.

    ``source`` is a canonical network (``10.1.0.0/16``, ``2001:db8::/32``), a security group id
    (``sg-...``), or ``me`` until :func:`resolve_me` replaces it. The description does not take part in
    equality, as in AWS, where it does not make a rule different.
    """

    protocol: str
    from_port: int
    to_port: int
    source: str
    description: str = field(default="", compare=False)

    @property
    def ports(self) -> str:
        """The port or range as people write it: ``8786``, ``8000-8100``, or ``all``."""
        if self.protocol == ALL_PROTOCOLS:
            return "all"
        if self.from_port == self.to_port:
            return str(self.from_port)
        return f"{self.from_port}-{self.to_port}"

    @property
    def source_kind(self) -> str:
        """``ipv4``, ``ipv6``, ``group`` or ``me``."""
        if self.source == ME:
            return ME
        if self.source.startswith("sg-"):
            return "group"
        return "ipv6" if ":" in self.source else "ipv4"

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        if self.source_kind in ("ipv4", "ipv6"):
            return _network(self.source)
        return None

    def __str__(self) -> str:
        return f"{self.protocol} {self.ports} from {self.source}"

    @property
    def key(self) -> tuple[str, int, int, str]:
        return (self.protocol, self.from_port, self.to_port, self.source)


def sort_key(rule: Rule) -> tuple:
    """Stable order: protocol, ports, then IPv4 before IPv6 before groups, by address."""
    if rule.source == ME or rule.source.startswith("sg-"):
        return (rule.protocol, rule.from_port, rule.to_port, (7, 0, 0, rule.source))
    net = _network(rule.source)
    source = (net.version, int(net.network_address), net.prefixlen, "")
    return (rule.protocol, rule.from_port, rule.to_port, source)


def canonical(rules: Iterable[Rule]) -> list[Rule]:
    """De-duplicate (first description wins, others are appended) and sort."""
    merged: dict[tuple, Rule] = {}
    for rule in rules:
        seen = merged.get(rule.key)
        if seen is None:
            merged[rule.key] = rule
        else:
            merged[rule.key] = replace(seen, description=_join_descriptions([seen, rule]))
    return sorted(merged.values(), key=sort_key)


# --------------------------------------------------------------------------------------------------
# Parsing


def parse_ingress(value, *, where: str = "ingress") -> list[Rule]:
    """Parse Coiled's ``ingress`` value into canonical rules, or raise :class:`IngressError`.

    ``value`` is a list of rule dicts, one rule dict, or YAML/JSON text of either. ``None`` and an
    empty list mean "no rules".
    """
    if isinstance(value, str):
        value = load_text(value, where)
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise IngressError(
            [
                f"{where} must be a list of rules like [{{'ports': [8786], 'cidr': '10.1.0.0/16'}}], "
                f"not {type(value).__name__} {excerpt(value)}."
            ]
        )
    _check_count(len(value), "rules", where)
    problems: list[str] = []
    rules: list[Rule] = []
    for index, item in enumerate(value, start=1):
        label = f"{where} rule {index}" if len(value) > 1 else f"{where} rule"
        try:
            rules.extend(parse_rule(item, where=label))
            _check_count(len(rules), "rules once its ports and sources are combined", where)
        except IngressError as error:
            problems.extend(error.problems)
            if len(rules) > MAX_RULES:
                break
    if problems:
        raise IngressError(problems)
    return canonical(rules)


def parse_rule(item, *, where: str = "rule") -> list[Rule]:
    """One ``{"ports": ..., "cidr": ...}`` dict into rules (one per port entry and source network)."""
    if not isinstance(item, Mapping):
        raise IngressError(
            [
                f"{where} must be a mapping like {{'ports': [8786], 'cidr': '10.1.0.0/16'}}, "
                f"not {type(item).__name__} {excerpt(item)}."
            ]
        )
    problems: list[str] = []
    for key in item:
        if key not in ALLOWED_KEYS:
            close = difflib.get_close_matches(str(key), ALLOWED_KEYS, n=1)
            hint = (
                f"did you mean '{close[0]}'?" if close else f"use only {', '.join(ALLOWED_KEYS)}."
            )
            problems.append(f"{where} has unknown key {excerpt(key)}; {hint}")
    for required in ("ports", "cidr"):
        if required not in item:
            problems.append(f"{where} has no '{required}'; add e.g. {_EXAMPLE[required]}.")
    port_ranges = (
        _collect(problems, parse_ports, item.get("ports"), where) if "ports" in item else []
    )
    sources = _collect(problems, parse_source, item.get("cidr"), where) if "cidr" in item else []
    protocol = _collect(problems, parse_protocol, item.get("protocol", "tcp"), where)
    description = _collect(problems, parse_description, item.get("description", ""), where)
    if problems:
        raise IngressError(problems)
    _check_count(
        len(port_ranges) * len(sources), "rules once its ports and sources are combined", where
    )
    return [
        Rule(protocol, low, high, source, description)
        for (low, high) in port_ranges
        for source in sources
    ]


_EXAMPLE = {"ports": "'ports: [8786, 8787]'", "cidr": "'cidr: 10.1.0.0/16'"}


def _collect(problems: list[str], parser, value, where):
    try:
        return parser(value, where=where)
    except IngressError as error:
        problems.extend(error.problems)
        return None


def load_text(text: str, where: str):
    """YAML (or JSON) text into Python values, by the strict rules of :mod:`.strict_yaml` (YAML 1.2
    core schema, no duplicate keys, no aliases, bounded size and depth)."""
    from .strict_yaml import StrictYAMLError, load

    try:
        return load(text, where)
    except StrictYAMLError as error:
        raise IngressError(error.problems) from None


def _check_count(count: int, what: str, where: str) -> None:
    if count > MAX_RULES:
        raise IngressError(
            [
                f"{where} has {count:,} {what}; a security group holds at most {MAX_RULES:,} "
                "rules, so write fewer (ranges like '8000-8100' and wider networks count as one)."
            ]
        )


def parse_ports(value, *, where: str = "ports") -> list[tuple[int, int]]:
    """A port, a range string, or a list of them, into sorted (low, high) ranges."""
    entries = value if isinstance(value, (list, tuple)) else [value]
    _check_count(len(entries), "ports", where)
    if not entries:
        raise IngressError(
            [f"{where} has an empty 'ports' list; list at least one port, e.g. [8786]."]
        )
    problems: list[str] = []
    ranges: list[tuple[int, int]] = []
    for entry in entries:
        try:
            ranges.append(_parse_port_entry(entry, where))
        except IngressError as error:
            problems.extend(error.problems)
    if problems:
        raise IngressError(problems)
    return sorted(set(ranges))


def _parse_port_entry(entry, where: str) -> tuple[int, int]:
    if isinstance(entry, bool):
        raise IngressError(
            [
                f"{where} has port {excerpt(entry)}, which is a boolean, not a port; "
                "write a number from 1 to 65535."
            ]
        )
    if isinstance(entry, float):
        raise IngressError(
            [
                f"{where} has port {excerpt(entry)}, which is not a whole number; "
                f"write {int(entry)} if that is what you mean."
                if entry.is_integer()
                else f"{where} has port {excerpt(entry)}, which is not a whole number."
            ]
        )
    if isinstance(entry, int):
        return (_check_port(entry, where), _check_port(entry, where))
    if isinstance(entry, str):
        text = entry.strip()
        for number in text.split("-"):
            if _LEADING_ZERO.fullmatch(number.strip()):
                raise IngressError(
                    [
                        f"{where} has port {excerpt(entry)} with a leading zero, which YAML reads "
                        f"as octal; write {int(number)} (ports are decimal)."
                    ]
                )
        clock = _SEXAGESIMAL.fullmatch(text)
        if clock:
            raise IngressError(
                [
                    f"{where} has port {excerpt(entry)}, which YAML 1.1 reads as a number in base "
                    f"60; for the range write '{clock.group(1)}-{clock.group(2)}'."
                ]
            )
        if _NUMBER.fullmatch(text):
            port = _check_port(int(text), where)
            return (port, port)
        match = _RANGE.match(text)
        if match:
            low = _check_port(int(match.group(1)), where)
            high = _check_port(int(match.group(2)), where)
            if low > high:
                raise IngressError(
                    [
                        f"{where} has range {excerpt(entry)} whose start is above its end; "
                        f"write '{high}-{low}'."
                    ]
                )
            return (low, high)
        raise IngressError(
            [
                f"{where} has port {excerpt(entry)}, which is not a port; write a number like "
                "8786 or a range like '8000-8100'."
            ]
        )
    raise IngressError(
        [
            f"{where} has port {excerpt(entry)} of type {type(entry).__name__}; write a number "
            "like 8786 or a range like '8000-8100'."
        ]
    )


def _check_port(port: int, where: str) -> int:
    if not 1 <= port <= 65535:
        raise IngressError(
            [f"{where} has port {port}, outside 1-65535; use a port from 1 to 65535."]
        )
    return port


def parse_source(value, *, where: str = "cidr") -> list[str]:
    """A source as written into its canonical sources (``everyone`` gives two)."""
    if isinstance(value, (list, tuple)):
        _check_count(len(value), "sources", where)
        problems: list[str] = []
        sources: list[str] = []
        for item in value:
            try:
                sources.extend(parse_source(item, where=where))
            except IngressError as error:
                problems.extend(error.problems)
        if problems:
            raise IngressError(problems)
        if not value:
            raise IngressError(
                [f"{where} has an empty 'cidr' list; give a network like 10.1.0.0/16."]
            )
        return list(dict.fromkeys(sources))
    if not isinstance(value, str):
        raise IngressError(
            [
                f"{where} has cidr {excerpt(value)} of type {type(value).__name__}; write a "
                "network in quotes like '10.1.0.0/16', 'me' or 'everyone'."
            ]
        )
    text = value.strip()
    lowered = text.lower()
    if lowered == EVERYONE:
        return list(EVERYONE_NETWORKS)
    if lowered == ME:
        return [ME]
    if lowered.startswith("sg-"):
        if not _GROUP_ID.match(lowered):
            raise IngressError(
                [
                    f"{where} has security group {excerpt(value)}, which is not a group id; "
                    "a group id looks like 'sg-0123456789abcdef0'."
                ]
            )
        return [lowered]
    return [canonical_network(text, where=where)]


def canonical_network(text: str, *, where: str = "cidr") -> str:
    """``10.1.0.0/16``, ``203.0.113.7`` (meaning /32) or an IPv6 network, in canonical form."""
    if not text:
        raise IngressError([f"{where} has an empty cidr; write a network like '10.1.0.0/16'."])
    address, slash, prefix = text.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise IngressError(
            [
                f"{where} has cidr {excerpt(text)}, which is not an IP network; write it like "
                "'10.1.0.0/16', '2001:db8::/32' or a single address '203.0.113.7'."
            ]
        ) from None
    if getattr(ip, "scope_id", None):
        raise IngressError(
            [
                f"{where} has cidr {excerpt(text)} with a zone {excerpt('%' + ip.scope_id)}, "
                "which a firewall rule cannot hold; remove it."
            ]
        )
    if not slash:
        return f"{ip}/{ip.max_prefixlen}"
    limit = ip.max_prefixlen
    if not _NUMBER.fullmatch(prefix) or not 0 <= int(prefix) <= limit:
        raise IngressError(
            [
                f"{where} has cidr {excerpt(text)} whose prefix length {excerpt('/' + prefix)} is not "
                f"between /0 and /{limit}; write e.g. '{address}/{limit}' for one "
                "address."
            ]
        )
    kind = ipaddress.IPv4Network if ip.version == 4 else ipaddress.IPv6Network
    network = kind((ip, int(prefix)), strict=False)
    if network.network_address != ip:
        raise IngressError(
            [
                f"{where} has cidr {excerpt(text)} with host bits set, which would admit all of "
                f"{network}; did you mean '{network}'? (or '{ip}/{limit}' for the one "
                "address)"
            ]
        )
    return str(network)


def mask_host_bits(value) -> tuple[object, list[str]]:
    """Coiled's ``ingress`` value with every CIDR that has host bits set masked as AWS masks it, and
    one sentence per CIDR saying how much more it admits than it names.

    Only for calls pasted from Coiled's documentation (``set_backend_options``), whose own example
    writes ``10.1.0.2/16`` and whose table shows the masked ``10.1.0.0/16``: the call works as
    written, and the widening is said before anything is stored. Everywhere else host bits are
    refused. Values that are not CIDRs are left for the parser to judge.
    """
    said: list[str] = []

    def mask(cidr):
        if not isinstance(cidr, str) or "/" not in cidr:
            return cidr
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
            address = ipaddress.ip_address(cidr.strip().partition("/")[0])
        except ValueError:
            return cidr
        if network.network_address == address:
            return cidr
        said.append(
            f"cidr {excerpt(cidr)} has host bits set; as AWS would, it is kept as {network}, which "
            f"admits {network.num_addresses:,} addresses; write '{address}/{network.max_prefixlen}' "
            "for the one address."
        )
        return str(network)

    def rule(item):
        if not isinstance(item, Mapping) or "cidr" not in item:
            return item
        cidr = item["cidr"]
        masked = [mask(c) for c in cidr] if isinstance(cidr, (list, tuple)) else mask(cidr)
        return {**item, "cidr": masked}

    if isinstance(value, Mapping):
        return rule(value), said
    if isinstance(value, (list, tuple)):
        return [rule(item) for item in value], said
    return value, said


def parse_protocol(value, *, where: str = "protocol") -> str:
    if isinstance(value, str) and value.strip().lower() in PROTOCOLS:
        return value.strip().lower()
    raise IngressError(
        [f"{where} has protocol {excerpt(value)}; use 'tcp' (the default) or 'udp'."]
    )


def parse_description(value, *, where: str = "description") -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise IngressError(
            [f"{where} has description {excerpt(value)}, which is not text; quote it."]
        )
    if len(value) > DESCRIPTION_MAX:
        raise IngressError(
            [
                f"{where} has a description of {len(value)} characters; AWS allows at "
                f"most {DESCRIPTION_MAX}, shorten it."
            ]
        )
    if not _DESCRIPTION_OK.fullmatch(value):  # match() would let a final "\n" through
        bad = "".join(sorted({c for c in value if not _DESCRIPTION_OK.fullmatch(c)}))
        raise IngressError(
            [
                f"{where} has description {excerpt(value)} with characters AWS refuses "
                f"({excerpt(bad)}); use letters, digits, spaces and ._-:/()#,@[]+=&;{{}}!$*."
            ]
        )
    return value


# --------------------------------------------------------------------------------------------------
# Meaning of a rule set


def open_to_everyone(rules: Iterable[Rule]) -> list[Rule]:
    """Rules that admit the whole IPv4 or IPv6 internet."""
    return [r for r in rules if r.network is not None and r.network.prefixlen == 0]


def resolve_me(rules: Iterable[Rule], addresses: Iterable[str]) -> list[Rule]:
    """Replace ``me`` by this notebook's public addresses (as /32 or /128 networks)."""
    networks = [str(ipaddress.ip_network(a)) for a in addresses]
    out: list[Rule] = []
    for rule in rules:
        if rule.source == ME:
            out.extend(replace(rule, source=network) for network in networks)
        else:
            out.append(rule)
    return canonical(out)


def subtract(current: Iterable[Rule], removing: Iterable[Rule], *, origin: str = "") -> list[Rule]:
    """``current`` without ``removing``: a port inside a range is cut out of the range.

    Every rule to remove must be admitted by ``current``, or an :class:`IngressError` names it and
    lists what is there. ``everyone`` is two rules (IPv4 and IPv6); removing it is fine when only one
    half is there, as in Coiled's default, which opens to ``0.0.0.0/0`` only.
    """
    current, removing = list(current), list(removing)

    def covered(rule: Rule) -> bool:
        spans = sorted(
            (r.from_port, r.to_port)
            for r in current
            if r.protocol == rule.protocol and r.source == rule.source
        )
        need = rule.from_port
        for low, high in spans:
            if low <= need <= high:
                need = high + 1
            if need > rule.to_port:
                return True
        return False

    present = [r for r in removing if covered(r)]
    missing = [
        r
        for r in removing
        if not covered(r)
        and not (
            r.source in EVERYONE_NETWORKS
            and any(
                p.source in EVERYONE_NETWORKS
                and (p.protocol, p.from_port, p.to_port) == (r.protocol, r.from_port, r.to_port)
                for p in present
            )
        )
    ]
    if missing:
        where = f" (from {origin})" if origin else ""
        there = ", ".join(str(r) for r in current) or "no rules at all"
        raise IngressError(
            [
                f"cannot remove {', '.join(str(r) for r in missing)}: it is not in the "
                f"effective rules{where}, which are: {there}."
            ]
        )
    out: list[Rule] = []
    for rule in current:
        pieces = [(rule.from_port, rule.to_port)]
        for cut in present:
            if (cut.protocol, cut.source) != (rule.protocol, rule.source):
                continue
            pieces = [
                piece
                for low, high in pieces
                for piece in (
                    (low, min(high, cut.from_port - 1)),
                    (max(low, cut.to_port + 1), high),
                )
                if piece[0] <= piece[1]
            ]
        out.extend(replace(rule, from_port=low, to_port=high) for low, high in pieces)
    return canonical(out)


@dataclass(frozen=True)
class Covered:
    """A rule the person wrote that is not sent on its own, because a wider rule admits all of it.

    ``rule`` is what was written (ports of one source merged), ``by`` the rule that is sent instead.
    Its description stays with ``rule``: it is never moved onto ``by``, which the person did not
    describe that way (``0.0.0.0/0`` must not read as "office VPN" in the console).
    """

    rule: Rule
    by: Rule

    def __str__(self) -> str:
        return (
            f"{_described(self.rule)} is covered by {_described(self.by)} and is not sent "
            "separately"
        )


def _described(rule: Rule) -> str:
    return f"{rule} ({rule.description})" if rule.description else str(rule)


@dataclass(frozen=True)
class Compaction:
    """What :func:`compaction` found: the rules to send and the written rules they cover."""

    rules: list[Rule]
    covered: tuple[Covered, ...] = ()


def compact(rules: Iterable[Rule]) -> list[Rule]:
    """An equivalent, never larger rule set for the cloud (see :func:`compaction`)."""
    return compaction(rules).rules


def compaction(rules: Iterable[Rule]) -> Compaction:
    """An equivalent, never larger rule set for the cloud, and the rules it leaves out as covered.

    Three steps repeat until the count stops falling, each of which can only lower it: per protocol
    and source, overlapping or contiguous port ranges merge (so ``{"ports": [8786, 8787]}`` becomes
    one rule 8786-8787); per protocol and port range, sibling networks collapse (``10.0.0.0/25`` and
    ``10.0.0.128/25`` become ``10.0.0.0/24``); a rule wholly inside another single rule is dropped.
    The result admits exactly the traffic the input admits, is sorted, and compacting it again
    changes nothing. Ports merge first, so that splitting ranges into single ports does not change
    the result: dropping covered single ports first could leave holes that no longer merge.

    Descriptions travel only with the pieces a rule is made of: a merged rule carries the
    descriptions of the rules merged into it (it admits exactly their union), while a rule dropped
    because a wider one covers it keeps its description to itself and is listed in ``covered``.

    Each step sorts once and sweeps, so a round is O(n log n); a dropped rule is found by looking up
    its supernets only at the prefix lengths present (at most 33 or 129) and binary-searching their
    port ranges, never by comparing every pair.
    """
    written = canonical(rules)
    if any(r.source == ME for r in written):
        raise ValueError("resolve 'me' with resolve_me() before compacting")
    pieces = [_Piece.of(rule, index) for index, rule in enumerate(written)]
    dropped: list[_Piece] = []
    while True:
        pieces = _merge_ports(pieces, dropped)
        merged = len(pieces)
        pieces = _drop_covered(_collapse_networks(pieces, dropped), dropped)
        if len(pieces) == merged:
            # Merging ports again would find nothing: its own output is already merged.
            break
    pieces.sort(key=_Piece.sort_key)
    out = [piece.rule(written) for piece in pieces]
    if not dropped:
        return Compaction(out)
    index = _Index(pieces)
    covered = tuple(
        Covered(piece.rule(written), out[index.covering(piece)])
        for piece in sorted(dropped, key=_Piece.order)
    )
    return Compaction(out, covered)


class _Piece:
    """A rule during compaction: its source as integers, and the written rules it is made of.

    ``version`` is 4 or 6 for a network (``address`` and ``prefix`` its integers), 0 for a security
    group (``group`` its id). ``donors`` index the written rules whose descriptions it carries.
    """

    __slots__ = (
        "protocol",
        "low",
        "high",
        "version",
        "address",
        "prefix",
        "group",
        "donors",
        "text",
    )

    def __init__(self, protocol, low, high, version, address, prefix, group, donors, text=""):
        self.protocol = protocol
        self.low = low
        self.high = high
        self.version = version
        self.address = address
        self.prefix = prefix
        self.group = group
        self.donors = donors
        self.text = text  # the source as written, while it has not changed

    @classmethod
    def of(cls, rule: Rule, index: int) -> _Piece:
        if rule.source.startswith("sg-"):
            return cls(rule.protocol, rule.from_port, rule.to_port, 0, 0, 0, rule.source, (index,))
        net = _network(rule.source)
        return cls(
            rule.protocol,
            rule.from_port,
            rule.to_port,
            net.version,
            int(net.network_address),
            net.prefixlen,
            "",
            (index,),
            rule.source,
        )

    @property
    def bits(self) -> int:
        return 32 if self.version == 4 else 128

    @property
    def last(self) -> int:
        """The network's last address."""
        return self.address + (1 << (self.bits - self.prefix)) - 1

    def source_key(self) -> tuple:
        return (self.protocol, self.version, self.address, self.prefix, self.group)

    def order(self) -> tuple:
        return (
            self.protocol,
            self.version,
            self.address,
            self.prefix,
            self.group,
            self.low,
            -self.high,
        )

    def sort_key(self) -> tuple:
        """The same order as :func:`sort_key` of the rule this piece becomes."""
        if self.version:
            return (
                self.protocol,
                self.low,
                self.high,
                (self.version, self.address, self.prefix, ""),
            )
        return (self.protocol, self.low, self.high, (7, 0, 0, self.group))

    def joined(self, other: _Piece, **change) -> _Piece:
        """This piece grown by ``other``, carrying both pieces' descriptions."""
        grown = _Piece(*(getattr(self, name) for name in _Piece.__slots__))
        for name, value in change.items():
            setattr(grown, name, value)
        grown.donors = self.donors + other.donors
        return grown

    def source(self) -> str:
        if self.version == 0:
            return self.group
        if self.text:
            return self.text
        kind = ipaddress.IPv4Network if self.version == 4 else ipaddress.IPv6Network
        return str(kind((self.address, self.prefix)))

    def rule(self, written: list[Rule]) -> Rule:
        if len(self.donors) == 1:  # nothing merged into it: the rule as written
            return written[self.donors[0]]
        return Rule(
            self.protocol,
            self.low,
            self.high,
            self.source(),
            _join_descriptions(written[i] for i in sorted(self.donors)),
        )


def _merge_ports(pieces: list[_Piece], dropped: list[_Piece]) -> list[_Piece]:
    """Per protocol and source, merge overlapping or contiguous port ranges; drop ranges inside one."""
    out: list[_Piece] = []
    run: _Piece | None = None
    for piece in sorted(pieces, key=_Piece.order):
        if run is not None and run.source_key() == piece.source_key():
            if piece.high <= run.high:  # inside the one earlier range that reaches run.high
                dropped.append(piece)
                continue
            if piece.low <= run.high + 1:
                run = out[-1] = run.joined(piece, high=piece.high)
                continue
        out.append(piece)
        run = piece
    return out


def _collapse_networks(pieces: list[_Piece], dropped: list[_Piece]) -> list[_Piece]:
    """Per protocol, port range and family, collapse sibling networks; drop networks inside one."""
    out = [p for p in pieces if p.version == 0]
    networks = sorted(
        (p for p in pieces if p.version),
        key=lambda p: (p.protocol, p.low, p.high, p.version, p.address, p.prefix),
    )
    stack: list[_Piece] = []
    group = None
    for piece in networks:
        if (piece.protocol, piece.low, piece.high, piece.version) != group:
            out.extend(stack)
            stack = []
            group = (piece.protocol, piece.low, piece.high, piece.version)
        if stack and piece.address <= stack[-1].last:  # sorted: inside the last network kept
            dropped.append(piece)
            continue
        stack.append(piece)
        while len(stack) > 1 and _siblings(stack[-2], stack[-1]):
            second, first = stack.pop(), stack.pop()
            stack.append(first.joined(second, prefix=first.prefix - 1, text=""))
    out.extend(stack)
    return out


def _siblings(first: _Piece, second: _Piece) -> bool:
    """The two halves of one network (first the lower), which together are that network."""
    if first.prefix != second.prefix or first.prefix == 0:
        return False
    size = 1 << (first.bits - first.prefix)
    return not first.address & size and second.address == first.address + size


class _Index:
    """Port ranges per protocol and source, to ask "which rule wholly covers this one?" in O(log n).

    Per source, ranges are sorted by (start, -end) with the running maximum of their ends; a range
    is covered by one of them when the range reaching furthest among those starting no later
    reaches its end. Networks are looked up at each prefix length present in their family.
    """

    def __init__(self, pieces: list[_Piece]):
        self.pieces = pieces
        self.sources: dict[tuple, tuple[list[int], list[int], list[int]]] = {}
        self.prefixes: dict[tuple[str, int], list[int]] = {}
        self.position: dict[int, int] = {}
        ordered = sorted(range(len(pieces)), key=lambda i: pieces[i].order())
        for i in ordered:
            piece = pieces[i]
            starts, reach, best = self.sources.setdefault(piece.source_key(), ([], [], []))
            self.position[i] = len(starts)
            furthest = not reach or piece.high > pieces[best[-1]].high
            starts.append(piece.low)
            reach.append(piece.high if furthest else reach[-1])
            best.append(i if furthest else best[-1])
            if piece.version:
                self.prefixes.setdefault((piece.protocol, piece.version), []).append(piece.prefix)
        for key, found in self.prefixes.items():
            self.prefixes[key] = sorted(set(found), reverse=True)

    def covering(self, piece: _Piece, *, itself: int | None = None) -> int | None:
        """The index of a piece wholly covering ``piece`` (the narrowest source first), or None.

        ``itself``: the index of ``piece`` in this index, which does not count as covering it.
        """
        prefixes = self.prefixes.get((piece.protocol, piece.version), [])
        candidates = [p for p in prefixes if p <= piece.prefix] if piece.version else [0]
        for prefix in candidates:
            key = piece.source_key()
            if piece.version:
                shift = piece.bits - prefix
                key = (piece.protocol, piece.version, piece.address >> shift << shift, prefix, "")
            found = self.sources.get(key)
            if found is None:
                continue
            starts, reach, best = found
            if itself is not None and key == piece.source_key():
                # Sorted by (start, -end), only the entries before this piece can cover it.
                at = self.position[itself] - 1
            else:
                at = bisect.bisect_right(starts, piece.low) - 1
            if at >= 0 and reach[at] >= piece.high:
                return best[at]
        return None


def _drop_covered(pieces: list[_Piece], dropped: list[_Piece]) -> list[_Piece]:
    """Drop pieces wholly inside another piece (a narrower source, or a range inside a range)."""
    index = _Index(pieces)
    out = []
    for i, piece in enumerate(pieces):
        if index.covering(piece, itself=i) is None:
            out.append(piece)
        else:
            dropped.append(piece)
    return out


@functools.lru_cache(maxsize=4096)
def _network(source: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse a canonical network once: sorting and reachability ask for it again and again."""
    return ipaddress.ip_network(source)


def _join_descriptions(rules: Iterable[Rule]) -> str:
    # Split joined descriptions again, so that joining twice does not repeat a part.
    parts = list(dict.fromkeys(part for r in rules for part in r.description.split("; ") if part))
    joined = "; ".join(parts)
    if len(joined) > DESCRIPTION_MAX:
        joined = joined[: DESCRIPTION_MAX - 3] + "..."
    return joined


def admits(rules: Iterable[Rule], protocol: str, port: int, address: str) -> bool:
    """Does any rule admit ``address`` on ``port``? (security group sources never match an address)

    A rule for all protocols (AWS's ``-1``, read from the cloud) admits every protocol and port."""
    ip = ipaddress.ip_address(address)
    for rule in rules:
        net = rule.network
        if (
            rule.protocol in (protocol, ALL_PROTOCOLS)
            and rule.from_port <= port <= rule.to_port
            and net is not None
            and net.version == ip.version
            and ip in net
        ):
            return True
    return False


def to_coiled(rules: Iterable[Rule], *, client: bool = False) -> list[dict]:
    """Rules back into Coiled's list-of-dicts, grouping ports that share a source.

    By default the result is what this tool reads back (the Dask config file, the account store): a
    range stays one string (``"8000-8100"``), and ``protocol`` (when not tcp) and ``description``
    are kept. With ``client=True`` it is exactly Coiled's ``FirewallOptions`` as ``coiled.Cluster``
    takes it in ``backend_options["ingress"]``: ``{"ports": [int, ...], "cidr": str}`` and nothing
    else, ranges listed port by port (at most :data:`MAX_LISTED_PORTS` per range). What Coiled's
    format cannot express (udp, a security group source, a wider range) is refused with one
    sentence each, all in one :class:`IngressError`.
    """
    rules = canonical(rules)
    if client:
        problems = [p for rule in rules if (p := _client_problem(rule))]
        if problems:
            raise IngressError(problems)
    groups: dict[tuple[str, str, str], list[int | str]] = {}
    for rule in rules:
        if client:
            key, ports = (rule.source, "tcp", ""), range(rule.from_port, rule.to_port + 1)
        else:
            key = (rule.source, rule.protocol, rule.description)
            ports = [rule.from_port if rule.from_port == rule.to_port else rule.ports]
        groups.setdefault(key, []).extend(ports)
    out = []
    for (source, protocol, description), ports in groups.items():
        item: dict = {"ports": sorted(set(ports)) if client else ports, "cidr": source}
        if protocol != "tcp":
            item["protocol"] = protocol
        if description:
            item["description"] = description
        out.append(item)
    return out


# Coiled's ingress lists single ports. A range is listed port by port up to this width; a wider one
# (1024-65535, say) is almost certainly meant for a security group, which takes ranges, and listed
# it would send Coiled tens of thousands of integers.
MAX_LISTED_PORTS = 1024

_TO_LAUNCHERS = (
    "apply it to the cluster's security group and hand the group to other launchers with "
    "cluster_kwargs().security_group_id"
)


def _client_problem(rule: Rule) -> str | None:
    """Why Coiled's ``FirewallOptions`` cannot carry ``rule`` (None when it can)."""
    if rule.protocol != "tcp":
        return (
            f"{rule} cannot be handed to coiled.Cluster: Coiled's ingress opens TCP ports only; "
            f"{_TO_LAUNCHERS}."
        )
    if rule.source_kind == "group":
        return (
            f"{rule} cannot be handed to coiled.Cluster: Coiled's ingress takes a CIDR block, not "
            f"a security group; {_TO_LAUNCHERS}."
        )
    if rule.source_kind == ME:
        raise ValueError("resolve 'me' with resolve_me() before handing rules to Coiled")
    width = rule.to_port - rule.from_port + 1
    if width > MAX_LISTED_PORTS:
        return (
            f"{rule} spans {width:,} ports, but Coiled's ingress lists single ports and this tool "
            f"lists at most {MAX_LISTED_PORTS:,} per range; narrow the range, or {_TO_LAUNCHERS}."
        )
    return None
