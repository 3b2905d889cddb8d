"""Team guardrails, checked on the rules as they will be sent.

The expected breaches are computed here by brute force over sampled addresses and every port of the
rules (``ipaddress`` and ``range``), not by the guardrail code under test.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coiled_jupyter.policy import Guardrails, parse_guardrail
from coiled_jupyter.rules import IngressError, compact, parse_ingress


def _rules(*items):
    return compact(parse_ingress(list(items)))


def _broken(rail, rules):
    return [str(r) for r in rail.broken_by(rules)]


def test_no_world_catches_the_world_on_its_ports_in_both_families():
    rail = parse_guardrail("no-world", "8786")
    rules = _rules(
        {"ports": [8786], "cidr": "0.0.0.0/0"},
        {"ports": ["8000-9000"], "cidr": "::/0"},
        {"ports": [8787], "cidr": "everyone"},
        {"ports": [8786], "cidr": "10.0.0.0/8"},
    )
    assert sorted(_broken(rail, rules)) == [
        "tcp 8000-9000 from ::/0",
        "tcp 8786-8787 from 0.0.0.0/0",
    ]


def test_two_halves_of_the_internet_compact_into_the_world_and_are_caught():
    rail = parse_guardrail("no-world", [8786])
    rules = _rules({"ports": [8786], "cidr": ["0.0.0.0/1", "128.0.0.0/1"]})
    assert _broken(rail, rules) == ["tcp 8786 from 0.0.0.0/0"]


def test_within_limits_networks_of_both_families_but_not_group_sources():
    rail = parse_guardrail("within", "10.0.0.0/8, 2001:db8::/32")
    rules = _rules(
        {"ports": [8786], "cidr": "10.1.0.0/16"},
        {"ports": [8786], "cidr": "11.0.0.0/8"},
        {"ports": [8786], "cidr": "2001:db8:1::/48"},
        {"ports": [8786], "cidr": "2001:db9::/32"},
        {"ports": [8786], "cidr": "sg-0123456789abcdef0"},
    )
    assert sorted(_broken(rail, rules)) == [
        "tcp 8786 from 11.0.0.0/8",
        "tcp 8786 from 2001:db9::/32",
    ]


def test_widest_counts_prefix_lengths_per_family():
    rail = parse_guardrail("widest", "16")
    assert rail.value == ("16", "48")
    rules = _rules(
        {"ports": [8786], "cidr": "10.0.0.0/15"},
        {"ports": [8786], "cidr": "10.2.0.0/16"},
        {"ports": [8786], "cidr": "2001:db8::/32"},
        {"ports": [8786], "cidr": "2001:db8:1::/48"},
    )
    assert sorted(_broken(rail, rules)) == [
        "tcp 8786 from 10.0.0.0/15",
        "tcp 8786 from 2001:db8::/32",
    ]


def test_max_rules_names_the_rules_past_the_limit():
    rail = parse_guardrail("max-rules", 2)
    rules = _rules(*({"ports": [port], "cidr": "10.1.0.0/16"} for port in (22, 443, 8786)))
    assert _broken(rail, rules) == ["tcp 8786 from 10.1.0.0/16"]


@st.composite
def networks(draw):
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(0, bits))
    address = draw(st.integers(0, 2**bits - 1))
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return cls((address, prefix), strict=False)


@settings(max_examples=200, deadline=None)
@given(
    sources=st.lists(networks(), min_size=1, max_size=5),
    limits=st.lists(networks(), min_size=1, max_size=3),
    forbidden=st.integers(1, 65535),
    port=st.integers(1, 65535),
)
def test_breaches_match_brute_force(sources, limits, forbidden, port):
    rules = _rules({"ports": [port], "cidr": [str(s) for s in sources]})
    world = parse_guardrail("no-world", forbidden)
    within = parse_guardrail("within", [str(n) for n in limits])
    for rule in rules:
        source = ipaddress.ip_network(rule.source)
        # the world: both ends of the address space are in the source; only /0 has both.
        first, last = source[0], source[-1]
        is_world = int(first) == 0 and int(last) == 2**source.max_prefixlen - 1
        opens = forbidden in range(rule.from_port, rule.to_port + 1)
        assert (rule in world.broken_by(rules)) == (is_world and opens)
        inside = any(
            limit.version == source.version and first in limit and last in limit for limit in limits
        )
        assert (rule in within.broken_by(rules)) == (not inside)


def test_override_needs_a_reason_a_known_name_and_a_breach():
    rails = Guardrails((parse_guardrail("no-world", "8786", set_by="lead", set_at="09:00 UTC"),))
    rules = _rules({"ports": [8786], "cidr": "everyone"})
    refused, overridden = rails.check(rules)
    assert [b.guardrail.name for b in refused] == ["no-world"] and not overridden
    sentence = refused[0].sentence()
    assert "guardrail no-world" in sentence and "set by lead at 09:00 UTC" in sentence
    assert "--override-guardrail no-world --reason TEXT" in sentence
    refused, overridden = rails.check(rules, {"no-world": "vendor debugging until 5pm"})
    assert not refused and overridden[0].reason == "vendor debugging until 5pm"
    for overrides, words in [
        ({"no-world": " "}, "needs --reason"),
        ({"no-wrld": "x"}, "no guardrail 'no-wrld'"),
        ({"within": "x"}, "overrides nothing"),
    ]:
        with pytest.raises(IngressError, match=words):
            rails.check(rules, overrides)


def test_stored_guardrails_read_back_and_a_hand_edited_store_is_refused():
    rails = Guardrails(
        (
            parse_guardrail("no-world", "8786-8787,22", set_by="a", set_at="t"),
            parse_guardrail("within", "10.0.0.0/8"),
            parse_guardrail("widest", "/20 /56"),
            parse_guardrail("max-rules", "40"),
        )
    )
    assert set(Guardrails.from_stored(rails.to_stored(), where="the store").rails) == set(
        rails.rails
    )
    for stored in (
        {"name": "no-world"},
        [{"name": "no-world", "value": ["8786"], "extra": 1}],
        [{"name": "max-rules", "value": ["2"]}, {"name": "max-rules", "value": ["3"]}],
        [{"name": "widest", "value": ["40"]}],
    ):
        with pytest.raises(IngressError):
            Guardrails.from_stored(stored, where="the store")


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("no-wrld", "8786", "no guardrail 'no-wrld'; the guardrails are"),
        ("no-world", "port", "no-world"),
        ("within", "", "needs at least one network"),
        ("within", "10.1.0.2/16", "host bits"),
        ("widest", "33", "from 0 to 32"),
        ("widest", "16 48 64", "prefix length for IPv4"),
        ("max-rules", "0", "from 1 to 1000"),
        ("max-rules", True, "whole numbers"),
    ],
)
def test_a_mistyped_guardrail_is_one_sentence(name, value, words):
    with pytest.raises(IngressError, match=words):
        parse_guardrail(name, value)
