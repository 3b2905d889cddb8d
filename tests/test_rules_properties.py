"""Property-based tests of rules.py (hypothesis).

(a) Parsing anything either gives canonical rules or raises IngressError, never another exception.
(b) Compaction and expansion undo each other up to compaction.
(c) Compaction keeps the meaning, checked with ``admits`` at every boundary point of the input rules,
    independently of how ``compact`` works.
(d) Compaction never grows the rule count and is idempotent.
(e) Compaction never moves a description onto a rule that merely covers the described one: a rule
    sent as written keeps exactly its own description, every covered rule is named with a sent rule
    that covers it, and no description is lost without being named.
(f) Widening: neighbouring networks of different sizes (IPv4 and IPv6, anywhere in the address
    space), partial port overlaps and removals wider than what is held. Compaction admits exactly
    what was declared and subtraction removes exactly what it says and never admits more, judged by
    tests/widening_oracle.py (``ipaddress`` and port intervals only, none of rules.py) and by
    enumerating every port.

Generated ports stay in 1-40 and networks inside 10.0.0.0/24 and 2001:db8::/120, so that overlaps,
nesting and adjacency actually happen.
"""

from __future__ import annotations

import ipaddress
import re

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rulekit import any_network, expand
from widening_oracle import excess, same_admission

from coiled_jupyter.rules import (
    ALLOWED_KEYS,
    DESCRIPTION_MAX,
    PROTOCOLS,
    IngressError,
    Rule,
    admits,
    canonical,
    canonical_network,
    compact,
    compaction,
    parse_description,
    parse_ingress,
    sort_key,
    subtract,
    to_coiled,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GROUPS = ["sg-00000000", "sg-00000001", "sg-0123456789abcdef0"]
V4_BASE = ipaddress.ip_network("10.0.0.0/24")
V6_BASE = ipaddress.ip_network("2001:db8::/120")
GROUP_ID = re.compile(r"sg-[0-9a-f]{8}([0-9a-f]{9})?")

# --------------------------------------------------------------------------------------------------
# Strategies for (a): anything a person or a file could hand to parse_ingress

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "8786",
            "8000-8100",
            "8100-8000",
            "me",
            "everyone",
            "10.1.0.0/16",
            "10.1.0.2/16",
            "::/0",
            "sg-12345678",
            "tcp",
            "udp",
            "²",
            "1e3",
        ]
    )
)
json_like = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from([*ALLOWED_KEYS, "port", "cdir"]) | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=15,
)


@st.composite
def valid_network(draw):
    network = draw(any_network())
    ip = network.network_address
    form = draw(st.sampled_from(["cidr", "cidr", "bare", "padded", "upper"]))
    if form == "bare":
        return str(ip)
    if form == "padded":
        return f" {network} "
    if form == "upper":
        return str(network).upper()
    return str(network)


@st.composite
def bad_network(draw):
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    address = draw(st.integers(1, 2**bits - 1))
    ip = ipaddress.IPv4Address(address) if version == 4 else ipaddress.IPv6Address(address)
    prefix = draw(st.sampled_from([bits + 1, bits + 2, -1, 0, 1]))
    return f"{ip}/{prefix}"  # a prefix length out of range, or (mostly) host bits set


valid_port = (
    st.integers(1, 65535)
    | st.integers(1, 40)
    | st.integers(1, 40).map(str)
    | st.tuples(st.integers(1, 65535), st.integers(0, 100)).map(
        lambda t: f"{t[0]}-{min(65535, t[0] + t[1])}"
    )
)
bad_port = (
    st.integers(-2, 70_000)
    | st.booleans()
    | st.floats(allow_nan=True)
    | st.tuples(st.integers(0, 70_000), st.integers(0, 70_000)).map(lambda t: f"{t[0]}-{t[1]}")
    | st.sampled_from(["abc", "", " 8786 ", "8786.0", "²", None])
)
valid_source = valid_network() | st.sampled_from(
    ["me", "everyone", "Everyone", "sg-12345678", "sg-0123456789ABCDEF0"]
)
bad_source = (
    bad_network()
    | st.sampled_from(["sg-xyz", "", "bad", "10.0.0/8"])
    | st.integers()
    | st.lists(valid_source | bad_network(), max_size=3)
)
valid_values = {
    "ports": valid_port | st.lists(valid_port, min_size=1, max_size=4),
    "cidr": valid_source | st.lists(valid_source, min_size=1, max_size=3),
    "protocol": st.sampled_from(["tcp", "udp", "TCP", " udp "]),
    "description": st.text(alphabet="abc xyz-:()#;", max_size=20) | st.just(None),
}
any_values = {
    "ports": st.lists(st.one_of(valid_port, valid_port, bad_port), max_size=4) | bad_port,
    "cidr": valid_source | bad_source,
    "protocol": st.sampled_from(["tcp", "icmp", 6, None, ""]),
    "description": st.sampled_from(["office", "x" * 256, "héllo", "line\n", 42]),
    "port": st.just(1),
    "cdir": st.just("10.0.0.0/8"),
}


@st.composite
def near_valid_rule(draw):
    """A valid rule dict two times out of three; otherwise one with one or more mistakes."""
    keys = ["ports", "cidr"]
    keys += draw(st.lists(st.sampled_from(["protocol", "description"]), unique=True, max_size=2))
    if draw(st.integers(0, 2)) != 0:
        return {key: draw(valid_values[key]) for key in keys}
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(list(any_values)), unique=True, max_size=5))
    mistaken = draw(st.sampled_from(keys)) if keys else None
    return {
        key: draw(
            any_values[key] if key == mistaken or key not in valid_values else valid_values[key]
        )
        for key in keys
    }


near_valid_input = st.lists(near_valid_rule(), max_size=5) | near_valid_rule()
anything = (
    json_like
    | st.text(max_size=60)
    | near_valid_input
    | near_valid_input.map(lambda v: yaml.safe_dump(v, default_flow_style=True))
)


def assert_canonical(rules):
    assert isinstance(rules, list)
    assert all(isinstance(r, Rule) for r in rules)
    assert rules == sorted(rules, key=sort_key)
    assert len({r.key for r in rules}) == len(rules)
    for rule in rules:
        assert rule.protocol in PROTOCOLS
        assert 1 <= rule.from_port <= rule.to_port <= 65535
        assert type(rule.from_port) is int and type(rule.to_port) is int
        if rule.source_kind in ("ipv4", "ipv6"):
            assert canonical_network(rule.source) == rule.source
        elif rule.source_kind == "group":
            assert GROUP_ID.fullmatch(rule.source)
        else:
            assert rule.source == "me"
        assert parse_description(rule.description) == rule.description


@FAST
@given(anything)
def test_parsing_anything_gives_canonical_rules_or_an_ingress_error(value):
    try:
        rules = parse_ingress(value)
    except IngressError as error:
        assert error.problems
        assert all(isinstance(p, str) and p for p in error.problems)
    else:
        assert_canonical(rules)
        assert parse_ingress(to_coiled(rules)) == rules


@settings(max_examples=300, deadline=None)
@given(st.lists(near_valid_rule(), max_size=4))
def test_near_valid_rules_parse_or_name_every_bad_rule(value):
    try:
        rules = parse_ingress(value)
    except IngressError as error:
        # every problem sentence names the rule it is about
        if len(value) > 1:
            assert all(re.match(r"ingress rule \d+ ", p) for p in error.problems), error.problems
    else:
        assert_canonical(rules)


# --------------------------------------------------------------------------------------------------
# Strategies for (b), (c), (d): rules in a small space


@st.composite
def small_network(draw):
    base = draw(st.sampled_from([V4_BASE, V4_BASE, V6_BASE]))
    prefix = draw(st.integers(base.prefixlen, base.max_prefixlen))
    index = draw(st.integers(0, 2 ** (prefix - base.prefixlen) - 1))
    size = 2 ** (base.max_prefixlen - prefix)
    return str(ipaddress.ip_network(f"{base.network_address + index * size}/{prefix}"))


@st.composite
def small_rule(draw):
    low = draw(st.integers(1, 40))
    high = min(40, low + draw(st.sampled_from([0, 0, 1, 2, 3, 5, 8, 17, 25])))
    source = draw(small_network() | st.sampled_from(GROUPS))
    protocol = draw(st.sampled_from(["tcp", "tcp", "udp"]))
    description = draw(st.sampled_from(["", "", "office", "vpn", "lab; annex", "y" * 200]))
    return Rule(protocol, low, high, source, description)


small_rules = st.lists(small_rule(), max_size=7)


def probe_points(rules):
    """Every boundary of the rules: ports and addresses at, just inside and just outside each edge."""
    ports = {p for r in rules for p in (r.from_port - 1, r.from_port, r.to_port, r.to_port + 1)}
    addresses = set()
    for rule in rules:
        net = rule.network
        if net is None:
            continue
        first, last = int(net.network_address), int(net.broadcast_address)
        for value in (first - 1, first, last, last + 1):
            if 0 <= value <= (2**net.max_prefixlen - 1):
                addresses.add(
                    str(
                        ipaddress.ip_address(value)
                        if net.version == 4
                        else ipaddress.IPv6Address(value)
                    )
                )
    return sorted(ports), sorted(addresses)


def group_admits(rules, protocol, port, group):
    """The meaning of security-group rules, which ``admits`` leaves out."""
    return any(
        r.protocol == protocol and r.from_port <= port <= r.to_port and r.source == group
        for r in rules
    )


def assert_same_meaning(before, after):
    ports, addresses = probe_points(before)
    for protocol in PROTOCOLS:
        for port in ports:
            for address in addresses:
                assert admits(after, protocol, port, address) == admits(
                    before, protocol, port, address
                ), (protocol, port, address)
            for group in GROUPS:
                assert group_admits(after, protocol, port, group) == group_admits(
                    before, protocol, port, group
                ), (protocol, port, group)


@FAST
@given(small_rules)
def test_compaction_keeps_the_meaning_at_every_boundary(rules):
    assert_same_meaning(rules, compact(rules))


@settings(FAST, max_examples=60)
@given(small_rules)
def test_expansion_keeps_the_meaning_at_every_boundary(rules):
    assert_same_meaning(rules, expand(rules))


@FAST
@given(small_rules)
def test_compaction_and_expansion_undo_each_other(rules):
    compacted = compact(rules)
    assert compact(expand(compacted)) == compacted
    assert compact(expand(rules)) == compacted


@FAST
@given(small_rules, st.integers(1, 20))
def test_expansion_of_any_width_compacts_back(rules, max_ports):
    assert compact(expand(rules, max_ports=max_ports)) == compact(rules)


@FAST
@given(small_rules)
def test_compaction_never_grows_and_is_idempotent(rules):
    compacted = compact(rules)
    assert len(compacted) <= len(canonical(rules)) <= len(rules)
    assert compact(compacted) == compacted
    assert [r.description for r in compact(compacted)] == [r.description for r in compacted]
    assert_canonical(compacted)
    assert all(len(r.description) <= DESCRIPTION_MAX for r in compacted)


@FAST
@given(small_rules)
def test_compaction_does_not_depend_on_the_order_of_the_rules(rules):
    assert compact(list(reversed(rules))) == compact(rules)


@FAST
@given(small_rules)
def test_to_coiled_round_trip(rules):
    expected = canonical(rules)
    again = parse_ingress(to_coiled(rules))
    assert again == expected
    assert [r.description for r in again] == [r.description for r in expected]


def parts(description: str) -> set[str]:
    return {part for part in description.split("; ") if part}


def inside(inner, outer) -> bool:
    """Does ``outer`` admit all that ``inner`` admits?"""
    if inner.protocol != outer.protocol:
        return False
    if not outer.from_port <= inner.from_port <= inner.to_port <= outer.to_port:
        return False
    if inner.network is None or outer.network is None:
        return inner.source == outer.source
    return inner.network.version == outer.network.version and inner.network.subnet_of(outer.network)


@FAST
@given(small_rules)
def test_a_rule_sent_as_written_keeps_exactly_its_own_description(rules):
    written = {r.key: r for r in canonical(rules)}
    for rule in compact(rules):
        if rule.key in written:
            assert rule.description == written[rule.key].description, rule


@FAST
@given(small_rules)
def test_every_covered_rule_is_named_with_a_sent_rule_that_covers_it(rules):
    found = compaction(rules)
    for item in found.covered:
        assert item.by in found.rules
        assert inside(item.rule, item.by), item
        assert item.rule.key != item.by.key


@FAST
@given(small_rules)
def test_no_description_is_lost_without_being_named(rules):
    found = compaction(rules)
    kept = set()
    for rule in [*found.rules, *(c.rule for c in found.covered)]:
        if rule.description.endswith("..."):
            return  # joined descriptions longer than AWS allows are cut; nothing to compare
        kept |= parts(rule.description)
    assert set().union(*(parts(r.description) for r in rules)) <= kept


# --------------------------------------------------------------------------------------------------
# (f) Widening: neighbours of different sizes, partial port overlaps, over-wide removals


@st.composite
def neighbours(draw):
    """Two networks that touch (the first's last address + 1 is the second's first), of sizes that
    differ as often as not, anywhere in the IPv4 or IPv6 space: the halves of a parent network,
    each possibly narrowed to the sub-network at the edge where they meet."""
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    kind = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    parent = draw(st.integers(0, bits - 1))
    start = draw(st.integers(0, 2**bits - 1)) >> (bits - parent) << (bits - parent)
    half = 1 << (bits - parent - 1)
    room = bits - parent - 1
    left_extra, right_extra = (draw(st.integers(0, min(room, 3))) for _ in range(2))
    left_prefix, right_prefix = parent + 1 + left_extra, parent + 1 + right_extra
    left_size = 1 << (bits - left_prefix)
    left = kind((start + half - left_size, left_prefix))
    right = kind((start + half, right_prefix))
    return [str(left), str(right)]


@st.composite
def neighbour_rules(draw):
    """Rules over neighbouring networks on one port range (so compaction tries to join them), plus
    rules whose port ranges overlap that range in part, over the same or other neighbours."""
    low = draw(st.integers(1, 30))
    high = low + draw(st.integers(0, 5))
    protocol = draw(st.sampled_from(["tcp", "udp"]))
    rules = [Rule(protocol, low, high, net) for net in draw(neighbours())]
    for _ in range(draw(st.integers(0, 3))):
        shift = draw(st.integers(-4, 4))
        width = draw(st.integers(0, 6))
        other_low = max(1, low + shift)
        source = draw(st.sampled_from([r.source for r in rules]) | neighbours().map(lambda n: n[0]))
        rules.append(Rule(protocol, other_low, min(40, other_low + width), source))
    return rules


def admitted_by_port(rules, protocol: str, port: int) -> dict[int, list]:
    """The networks admitted on one port, per family, collapsed by ``ipaddress``."""
    networks = [ipaddress.ip_network(r.source) for r in rules if r.network is not None]
    here = [
        net
        for r, net in zip((r for r in rules if r.network is not None), networks)
        if r.protocol == protocol and r.from_port <= port <= r.to_port
    ]
    return {
        version: list(ipaddress.collapse_addresses(n for n in here if n.version == version))
        for version in (4, 6)
    }


def assert_admits_exactly(declared, sent):
    wider, narrower = same_admission(sent, declared)
    assert not wider, f"{sent} admits {wider} that {declared} does not"
    assert not narrower, f"{sent} loses {narrower} that {declared} admits"
    for protocol in PROTOCOLS:
        for port in range(0, 42):
            assert admitted_by_port(sent, protocol, port) == admitted_by_port(
                declared, protocol, port
            ), (protocol, port)


@FAST
@example([Rule("tcp", 8786, 8786, "10.0.0.0/25"), Rule("tcp", 8786, 8786, "10.0.0.128/26")])
@example([Rule("tcp", 1, 1, "2001:db8::/33"), Rule("tcp", 1, 1, "2001:db8:8000::/34")])
@example([Rule("tcp", 5, 5, "10.0.0.0/25"), Rule("tcp", 5, 5, "10.0.0.128/25")])
@given(neighbour_rules())
def test_compacting_neighbours_of_different_sizes_admits_exactly_what_was_declared(rules):
    assert_admits_exactly(rules, compact(rules))


@FAST
@given(neighbour_rules(), small_rules)
def test_compaction_with_neighbours_among_other_rules_admits_exactly_the_input(rules, others):
    assert_admits_exactly([*rules, *others], compact([*rules, *others]))


def test_siblings_of_one_size_still_collapse_into_their_parent():
    """The check above must not be met by never collapsing anything."""
    rules = [Rule("tcp", 8786, 8786, "10.0.0.0/25"), Rule("tcp", 8786, 8786, "10.0.0.128/25")]
    assert [r.source for r in compact(rules)] == ["10.0.0.0/24"]


EVERYONE = ("0.0.0.0/0", "::/0")
HELD_SOURCES = ["10.0.0.0/25", "10.0.0.128/26", "10.0.0.0/24", "2001:db8::/64", *EVERYONE]


@st.composite
def held_and_removed(draw):
    """Rules held, and rules to remove: most cut from what is held, widened at either end past it,
    or over a neighbouring source; ports in 1-40 so that every port can be enumerated."""
    held = []
    for _ in range(draw(st.integers(1, 5))):
        low = draw(st.integers(1, 36))
        held.append(
            Rule(
                draw(st.sampled_from(["tcp", "tcp", "udp"])),
                low,
                min(40, low + draw(st.integers(0, 4))),
                draw(st.sampled_from(HELD_SOURCES)),
            )
        )
    removing = []
    for _ in range(draw(st.integers(1, 3))):
        base = draw(st.sampled_from(held))
        low = max(1, base.from_port + draw(st.integers(-2, 2)))
        high = min(40, max(low, base.to_port + draw(st.integers(-2, 2))))
        source = draw(st.sampled_from([base.source, base.source, *HELD_SOURCES]))
        removing.append(Rule(base.protocol, low, high, source))
    return canonical(held), canonical(removing)


def port_set(rules) -> set[tuple[str, int, str]]:
    """(protocol, port, source) for every port a rule names: subtraction works per exact source."""
    return {(r.protocol, p, r.source) for r in rules for p in range(r.from_port, r.to_port + 1)}


def _everyone_half(removed: tuple[str, int, str], held: set, removing: set) -> bool:
    """Removing ``everyone`` (both families) where only one family is held, as in Coiled's default."""
    protocol, port, source = removed
    return source in EVERYONE and any(
        (protocol, port, other) in held and (protocol, port, other) in removing
        for other in EVERYONE
    )


@settings(FAST, max_examples=300)
@example(([Rule("tcp", 8786, 8786, "10.1.0.0/16")], [Rule("tcp", 8786, 8787, "10.1.0.0/16")]))
@example(([Rule("tcp", 8786, 8787, "10.1.0.0/16")], [Rule("tcp", 8786, 8786, "10.1.0.0/16")]))
@given(held_and_removed())
def test_subtract_removes_exactly_what_it_says_and_never_admits_more(case):
    held, removing = case
    held_ports, removing_ports = port_set(held), port_set(removing)
    not_held = {
        item
        for item in removing_ports - held_ports
        if not _everyone_half(item, held_ports, removing_ports)
    }
    try:
        left = subtract(held, removing)
    except IngressError as error:
        assert not_held, f"refused although everything removed is held: {error}"
        return
    assert not not_held, f"said it removed {sorted(not_held)}, which were never held"
    assert port_set(left) == held_ports - removing_ports
    assert not excess(left, held), "the rules left admit more than the rules held"
