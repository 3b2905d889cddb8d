"""Rules: parsing, validation sentences, canonical form, compaction and the meaning of a rule set.

Every refusal is checked on its sentence (the value it names and the fix it offers), not only on the
exception type.
"""

from __future__ import annotations

import textwrap

import pytest
from rulekit import expand

from coiled_jupyter.rules import (
    DESCRIPTION_MAX,
    Covered,
    IngressError,
    Rule,
    admits,
    canonical,
    canonical_network,
    compact,
    compaction,
    open_to_everyone,
    parse_ingress,
    parse_ports,
    parse_rule,
    resolve_me,
    sort_key,
    to_coiled,
)

# Coiled's documented example (docs.coiled.io, "Firewall" / backend_options ingress).
COILED_EXAMPLE = [
    {"ports": [8786, 8787], "cidr": "10.1.0.0/16"},
    {"ports": [8786], "cidr": "10.2.0.0/16"},
]
COILED_EXAMPLE_YAML = textwrap.dedent(
    """\
    - ports: [8786, 8787]
      cidr: 10.1.0.0/16
    - ports: [8786]
      cidr: 10.2.0.0/16
    """
)
COILED_EXAMPLE_RULES = [
    Rule("tcp", 8786, 8786, "10.1.0.0/16"),
    Rule("tcp", 8786, 8786, "10.2.0.0/16"),
    Rule("tcp", 8787, 8787, "10.1.0.0/16"),
]


def one(ports=(8786,), cidr="10.1.0.0/16", **extra):
    """A single-rule ingress list."""
    return [{"ports": list(ports), "cidr": cidr, **extra}]


def problems_of(value) -> list[str]:
    with pytest.raises(IngressError) as caught:
        parse_ingress(value)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def only_problem(value) -> str:
    problems = problems_of(value)
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------------------------------
# Accepted inputs


def test_coiled_documented_example_as_python_objects():
    assert parse_ingress(COILED_EXAMPLE) == COILED_EXAMPLE_RULES


def test_coiled_documented_example_as_yaml_text():
    assert parse_ingress(COILED_EXAMPLE_YAML) == COILED_EXAMPLE_RULES


def test_coiled_documented_example_as_json_text():
    text = (
        '[{"ports": [8786, 8787], "cidr": "10.1.0.0/16"}, {"ports": [8786], "cidr": "10.2.0.0/16"}]'
    )
    assert parse_ingress(text) == COILED_EXAMPLE_RULES


def test_a_single_rule_dict_is_a_list_of_one():
    assert parse_ingress({"ports": [8786], "cidr": "10.1.0.0/16"}) == [
        Rule("tcp", 8786, 8786, "10.1.0.0/16")
    ]


@pytest.mark.parametrize("value", [None, [], (), "", "[]", "# nothing here\n"])
def test_nothing_means_no_rules(value):
    assert parse_ingress(value) == []


def test_single_port_not_in_a_list():
    assert parse_ingress([{"ports": 8786, "cidr": "10.1.0.0/16"}]) == [
        Rule("tcp", 8786, 8786, "10.1.0.0/16")
    ]


def test_port_as_a_string_of_digits_is_accepted():
    # Documented decision: YAML, JSON and magics produce strings, so "8786" means port 8786.
    assert parse_ingress(one(ports=["8786"])) == [Rule("tcp", 8786, 8786, "10.1.0.0/16")]
    assert parse_ingress(one(ports=[" 8786 "])) == [Rule("tcp", 8786, 8786, "10.1.0.0/16")]


@pytest.mark.parametrize("text", ["8000-8100", " 8000 - 8100 "])
def test_range_string_is_accepted(text):
    [rule] = parse_ingress(one(ports=[text]))
    assert (rule.from_port, rule.to_port) == (8000, 8100)
    assert rule.ports == "8000-8100"


def test_extreme_ports_are_accepted():
    assert [r.from_port for r in parse_ingress(one(ports=[1, 65535]))] == [1, 65535]
    [rule] = parse_ingress(one(ports=["1-65535"]))
    assert (rule.from_port, rule.to_port) == (1, 65535)


def test_bare_ipv4_address_means_slash_32():
    [rule] = parse_ingress(one(cidr="203.0.113.7"))
    assert rule.source == "203.0.113.7/32"
    assert rule.source_kind == "ipv4"


def test_ipv6_network_is_written_in_canonical_compressed_form():
    [rule] = parse_ingress(one(cidr="2001:0DB8:0000:0000::/32"))
    assert rule.source == "2001:db8::/32"
    assert rule.source_kind == "ipv6"


def test_bare_ipv6_address_means_slash_128():
    [rule] = parse_ingress(one(cidr="2001:db8:0:0:0:0:0:1"))
    assert rule.source == "2001:db8::1/128"


def test_everyone_means_all_ipv4_and_all_ipv6():
    rules = parse_ingress(one(cidr="everyone"))
    assert [r.source for r in rules] == ["0.0.0.0/0", "::/0"]
    assert open_to_everyone(rules) == rules


def test_everyone_is_case_insensitive():
    assert parse_ingress(one(cidr=" Everyone ")) == parse_ingress(one(cidr="everyone"))


def test_me_is_kept_as_the_symbolic_source_me():
    [rule] = parse_ingress(one(cidr="me"))
    assert rule.source == "me"
    assert rule.source_kind == "me"
    assert rule.network is None


@pytest.mark.parametrize("group", ["sg-0123456789abcdef0", "sg-12345678", "SG-0123456789ABCDEF0"])
def test_security_group_ids_are_sources(group):
    [rule] = parse_ingress(one(cidr=group))
    assert rule.source == group.lower()
    assert rule.source_kind == "group"
    assert rule.network is None


def test_udp_protocol():
    [rule] = parse_ingress(one(protocol="UDP"))
    assert rule.protocol == "udp"
    assert to_coiled([rule]) == [{"ports": [8786], "cidr": "10.1.0.0/16", "protocol": "udp"}]


def test_tcp_is_the_default_protocol():
    [rule] = parse_ingress(one())
    assert rule.protocol == "tcp"


def test_description_is_kept_and_does_not_make_a_rule_different():
    [rule] = parse_ingress(one(description="office VPN: (team-a) #1"))
    assert rule.description == "office VPN: (team-a) #1"
    assert rule == Rule("tcp", 8786, 8786, "10.1.0.0/16", "something else")


def test_description_of_the_maximum_length_is_accepted():
    [rule] = parse_ingress(one(description="x" * DESCRIPTION_MAX))
    assert len(rule.description) == DESCRIPTION_MAX


def test_a_list_of_cidrs_gives_one_rule_per_source():
    rules = parse_ingress([{"ports": [22], "cidr": ["10.1.0.0/16", "10.2.0.0/16", "10.1.0.0/16"]}])
    assert [r.source for r in rules] == ["10.1.0.0/16", "10.2.0.0/16"]


def test_duplicates_are_removed_and_their_descriptions_joined():
    rules = parse_ingress(
        [
            {"ports": [8786], "cidr": "10.1.0.0/16", "description": "office"},
            {"ports": ["8786"], "cidr": "10.1.0.0/16", "description": "vpn"},
            {"ports": [8786, 8786], "cidr": "10.1.0.0/16", "description": "office"},
        ]
    )
    assert rules == [Rule("tcp", 8786, 8786, "10.1.0.0/16")]
    assert rules[0].description == "office; vpn"


def test_rules_come_out_in_a_stable_sorted_order():
    value = [
        {"ports": [8787], "cidr": "sg-0123456789abcdef0"},
        {"ports": [8787], "cidr": "2001:db8::/32"},
        {"ports": [8787], "cidr": "10.2.0.0/16"},
        {"ports": [8787], "cidr": "9.0.0.0/8"},
        {"ports": [8786], "cidr": "10.2.0.0/16", "protocol": "udp"},
        {"ports": ["8000-9000"], "cidr": "10.1.0.0/16"},
        {"ports": [8786], "cidr": "10.1.0.0/16"},
    ]
    expected = [
        ("tcp", 8000, 9000, "10.1.0.0/16"),
        ("tcp", 8786, 8786, "10.1.0.0/16"),
        ("tcp", 8787, 8787, "9.0.0.0/8"),  # by address, not as text
        ("tcp", 8787, 8787, "10.2.0.0/16"),
        ("tcp", 8787, 8787, "2001:db8::/32"),  # IPv6 after IPv4
        ("tcp", 8787, 8787, "sg-0123456789abcdef0"),  # groups last
        ("udp", 8786, 8786, "10.2.0.0/16"),
    ]
    assert [r.key for r in parse_ingress(value)] == expected
    assert [r.key for r in parse_ingress(list(reversed(value)))] == expected
    assert parse_ingress(value) == sorted(parse_ingress(value), key=sort_key)


# --------------------------------------------------------------------------------------------------
# Refused inputs: one sentence naming the value and the fix


@pytest.mark.parametrize("port", [0, 70000, -1, 65536])
def test_port_outside_the_valid_range(port):
    problem = only_problem(one(ports=[port]))
    assert f"port {port}, outside 1-65535" in problem
    assert "use a port from 1 to 65535" in problem


@pytest.mark.parametrize("text", ["0", "70000", "0-10", "8000-70000"])
def test_port_strings_outside_the_valid_range(text):
    problem = only_problem(one(ports=[text]))
    assert "outside 1-65535" in problem


@pytest.mark.parametrize("value", [True, False])
def test_boolean_ports_are_refused(value):
    # True == 1 would silently open port 1.
    problem = only_problem(one(ports=[value]))
    assert f"port {value!r}, which is a boolean, not a port" in problem
    assert "write a number from 1 to 65535" in problem


def test_boolean_port_outside_a_list_is_refused():
    problem = only_problem([{"ports": True, "cidr": "10.1.0.0/16"}])
    assert "port True, which is a boolean" in problem


def test_whole_float_port_is_refused_with_the_integer_offered():
    problem = only_problem(one(ports=[3.0]))
    assert "port 3.0, which is not a whole number" in problem
    assert "write 3 if that is what you mean" in problem


def test_fractional_float_port_is_refused():
    problem = only_problem(one(ports=[3.5]))
    assert "port 3.5, which is not a whole number" in problem


def test_word_as_port_is_refused():
    problem = only_problem(one(ports=["abc"]))
    assert "port 'abc', which is not a port" in problem
    assert "8786" in problem and "'8000-8100'" in problem


@pytest.mark.parametrize(
    "value, type_name", [(None, "NoneType"), ({"port": 1}, "dict"), ([8786], "list")]
)
def test_port_of_a_wrong_type_is_refused(value, type_name):
    problem = only_problem(one(ports=[value]))
    assert f"port {value!r} of type {type_name}" in problem
    assert "write a number like 8786" in problem


@pytest.mark.parametrize("text", ["²", "٨٧٨٦", "9" * 5000, "1" * 11, "8786.0", "8786-", "-8786"])
def test_odd_digit_strings_are_refused_with_a_sentence(text):
    problem = only_problem(one(ports=[text]))
    assert "which is not a port" in problem or "outside 1-65535" in problem


def test_reversed_range_is_refused_with_the_right_order_offered():
    problem = only_problem(one(ports=["8100-8000"]))
    assert "range '8100-8000' whose start is above its end" in problem
    assert "write '8000-8100'" in problem


def test_empty_ports_list_is_refused():
    problem = only_problem(one(ports=[]))
    assert "empty 'ports' list" in problem
    assert "e.g. [8786]" in problem


def test_missing_ports_and_cidr_are_both_reported():
    problems = problems_of([{}])
    assert len(problems) == 2
    assert "has no 'ports'; add e.g. 'ports: [8786, 8787]'" in problems[0]
    assert "has no 'cidr'; add e.g. 'cidr: 10.1.0.0/16'" in problems[1]


@pytest.mark.parametrize(
    "cidr",
    ["10.1.0/16", "10.1.0.0.0/16", "example.com", "256.1.1.1", "10.1.0.0 /16", "2001:db8:::1/64"],
)
def test_malformed_cidr_is_refused(cidr):
    problem = only_problem(one(cidr=cidr))
    assert repr(cidr) in problem
    assert "'10.1.0.0/16'" in problem  # an example of the right form


def test_empty_cidr_is_refused():
    problem = only_problem(one(cidr="  "))
    assert "empty cidr" in problem


def test_empty_cidr_list_is_refused():
    problem = only_problem(one(cidr=[]))
    assert "empty 'cidr' list" in problem


def test_ipv4_prefix_length_above_32_is_refused():
    problem = only_problem(one(cidr="10.1.0.0/33"))
    assert "cidr '10.1.0.0/33' whose prefix length '/33' is not between /0 and /32" in problem
    assert "'10.1.0.0/32' for one address" in problem


def test_ipv6_prefix_length_above_128_is_refused():
    problem = only_problem(one(cidr="2001:db8::/129"))
    assert "prefix length '/129' is not between /0 and /128" in problem
    assert "'2001:db8::/128' for one address" in problem


@pytest.mark.parametrize(
    "cidr",
    [
        "10.1.0.0/-1",
        "10.1.0.0/x",
        "10.1.0.0/",
        "10.1.0.0/²",
        "10.1.0.0/16/8",
        "10.1.0.0/99999999999",
    ],
)
def test_prefix_length_that_is_not_a_number_is_refused(cidr):
    problem = only_problem(one(cidr=cidr))
    assert f"cidr {cidr!r} whose prefix length" in problem
    assert "is not between /0 and /32" in problem


def test_surrounding_whitespace_of_a_cidr_is_ignored():
    assert parse_ingress(one(cidr=" 10.1.0.0/16\n")) == parse_ingress(one(cidr="10.1.0.0/16"))


def test_canonical_network_alone_refuses_a_trailing_newline():
    with pytest.raises(IngressError, match="prefix length"):
        canonical_network("10.1.0.0/16\n")


def test_host_bits_set_is_refused_with_both_readings_offered():
    problem = only_problem(one(cidr="10.1.0.2/16"))
    assert "cidr '10.1.0.2/16' with host bits set" in problem
    assert "did you mean '10.1.0.0/16'" in problem
    assert "'10.1.0.2/32' for the one address" in problem


def test_ipv6_host_bits_set_is_refused():
    problem = only_problem(one(cidr="2001:db8::1/32"))
    assert "did you mean '2001:db8::/32'" in problem


def test_ipv6_zone_is_refused():
    problem = only_problem(one(cidr="fe80::1%eth0"))
    assert "'fe80::1%eth0'" in problem and "zone" in problem


@pytest.mark.parametrize(
    "key, suggestion",
    [("port", "ports"), ("cdir", "cidr"), ("protcol", "protocol"), ("desciption", "description")],
)
def test_unknown_key_gets_a_did_you_mean(key, suggestion):
    value = one()
    value[0][key] = "x"
    problem = only_problem(value)
    assert f"unknown key {key!r}; did you mean '{suggestion}'?" in problem


def test_unknown_key_without_a_close_match_lists_the_keys():
    value = one()
    value[0]["zzz"] = 1
    problem = only_problem(value)
    assert "unknown key 'zzz'; use only ports, cidr, protocol, description." in problem


def test_a_string_where_a_list_of_rules_is_expected():
    problem = only_problem("10.1.0.0/16")
    assert "ingress must be a list of rules like" in problem
    assert "not str '10.1.0.0/16'" in problem


def test_a_number_where_a_list_of_rules_is_expected():
    problem = only_problem(8786)
    assert "not int 8786" in problem


def test_a_string_where_a_rule_dict_is_expected():
    problem = only_problem(["8786"])
    assert "ingress rule must be a mapping like {'ports': [8786], 'cidr': '10.1.0.0/16'}" in problem
    assert "not str '8786'" in problem


def test_a_number_as_cidr_is_refused():
    problem = only_problem(one(cidr=10))
    assert "cidr 10 of type int" in problem
    assert "write a network in quotes like '10.1.0.0/16'" in problem


def test_an_unquoted_yaml_number_as_cidr_is_refused():
    problem = only_problem("- ports: [8786]\n  cidr: 10\n")
    assert "cidr 10 of type int" in problem


@pytest.mark.parametrize("protocol", ["icmp", "all", "-1", 6, None, ""])
def test_bad_protocol_is_refused(protocol):
    problem = only_problem(one(protocol=protocol))
    assert f"protocol {protocol!r}; use 'tcp' (the default) or 'udp'." in problem


def test_too_long_description_is_refused():
    problem = only_problem(one(description="x" * (DESCRIPTION_MAX + 1)))
    assert f"description of {DESCRIPTION_MAX + 1} characters" in problem
    assert f"at most {DESCRIPTION_MAX}, shorten it" in problem


@pytest.mark.parametrize(
    "text, bad",
    [
        ("héllo <team>", "'<>é'"),
        ("two\nlines", "'\\n'"),
        ("trailing newline\n", "'\\n'"),
        ("tab\there", "'\\t'"),
    ],
)
def test_description_with_characters_aws_refuses(text, bad):
    problem = only_problem(one(description=text))
    assert f"description {text!r} with characters AWS refuses ({bad})" in problem
    assert "use letters, digits, spaces" in problem


def test_description_that_is_not_text_is_refused():
    problem = only_problem(one(description=42))
    assert "description 42, which is not text; quote it." in problem


def test_bad_yaml_text_names_the_line_and_column():
    problem = only_problem("- ports: [8786\n  cidr: 10.1.0.0/16\n")
    assert problem.startswith("ingress text could not be read at line 2, column")
    assert "check the indentation" in problem


def test_bad_yaml_text_names_where_it_came_from():
    with pytest.raises(IngressError) as caught:
        parse_ingress("ports: [: :", where="%%coiled_ingress body")
    assert caught.value.problems[0].startswith("%%coiled_ingress body text could not be read")


@pytest.mark.parametrize(
    "group", ["sg-123", "sg-0123456789abcdefg", "sg-", "sg-0123456789abcdef01"]
)
def test_bad_security_group_id_is_refused(group):
    problem = only_problem(one(cidr=group))
    assert f"security group {group!r}, which is not a group id" in problem
    assert "'sg-0123456789abcdef0'" in problem


def test_every_mistake_of_one_input_is_reported_together():
    value = [
        {"ports": [0, "abc", True], "cidr": "10.1.0.2/16", "prot": "tcp"},
        {"ports": ["8100-8000"], "cidr": "not-a-network", "protocol": "icmp"},
        {"ports": [8786], "cidr": "10.3.0.0/16"},  # a good rule does not hide the others
        "8786",
    ]
    problems = problems_of(value)
    expected = [
        "ingress rule 1 has unknown key 'prot'; did you mean 'protocol'?",
        "ingress rule 1 has port 0, outside 1-65535",
        "ingress rule 1 has port 'abc', which is not a port",
        "ingress rule 1 has port True, which is a boolean",
        "did you mean '10.1.0.0/16'",
        "ingress rule 2 has range '8100-8000' whose start is above its end",
        "ingress rule 2 has cidr 'not-a-network', which is not an IP network",
        "ingress rule 2 has protocol 'icmp'",
        "ingress rule 4 must be a mapping",
    ]
    assert len(problems) == len(expected)
    for fragment in expected:
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)


def test_nothing_is_returned_for_a_partly_valid_input():
    with pytest.raises(IngressError):
        parse_ingress(
            [{"ports": [8786], "cidr": "10.1.0.0/16"}, {"ports": [0], "cidr": "10.2.0.0/16"}]
        )


def test_the_where_label_names_the_origin():
    with pytest.raises(IngressError) as caught:
        parse_ingress(one(ports=[0]), where="ingress in dask config /x/coiled.yaml")
    assert caught.value.problems[0].startswith(
        "ingress in dask config /x/coiled.yaml rule has port 0"
    )


def test_ingress_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse_ingress(5)


def test_parse_rule_and_parse_ports_can_be_used_alone():
    assert parse_rule({"ports": "8786", "cidr": "me"}) == [Rule("tcp", 8786, 8786, "me")]
    assert parse_ports([8787, "8000-8100", 8786, 8786]) == [
        (8000, 8100),
        (8786, 8786),
        (8787, 8787),
    ]


# --------------------------------------------------------------------------------------------------
# Canonical networks


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.1.0.0/16", "10.1.0.0/16"),
        ("10.1.0.0/016", "10.1.0.0/16"),
        ("203.0.113.7", "203.0.113.7/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("2001:db8:0000::1", "2001:db8::1/128"),
        ("::/0", "::/0"),
    ],
)
def test_canonical_network(text, expected):
    assert canonical_network(text) == expected
    assert canonical_network(expected) == expected


# --------------------------------------------------------------------------------------------------
# Meaning of a rule set


def test_open_to_everyone_reports_only_the_whole_internet():
    rules = parse_ingress(
        [
            {"ports": [8786], "cidr": "0.0.0.0/0"},
            {"ports": [8787], "cidr": "::/0"},
            {"ports": [8786], "cidr": "0.0.0.0/1"},
            {"ports": [8786], "cidr": "me"},
            {"ports": [8786], "cidr": "sg-0123456789abcdef0"},
        ]
    )
    assert [r.source for r in open_to_everyone(rules)] == ["0.0.0.0/0", "::/0"]


def test_resolve_me_replaces_me_with_this_notebooks_addresses():
    rules = parse_ingress(
        [
            {"ports": [8786, 8787], "cidr": "me", "description": "laptop"},
            {"ports": [8786], "cidr": "10.1.0.0/16"},
        ]
    )
    resolved = resolve_me(rules, ["203.0.113.7", "2001:db8::7"])
    assert [r.key for r in resolved] == [
        ("tcp", 8786, 8786, "10.1.0.0/16"),
        ("tcp", 8786, 8786, "203.0.113.7/32"),
        ("tcp", 8786, 8786, "2001:db8::7/128"),
        ("tcp", 8787, 8787, "203.0.113.7/32"),
        ("tcp", 8787, 8787, "2001:db8::7/128"),
    ]
    assert all(r.description == "laptop" for r in resolved if r.source != "10.1.0.0/16")


def test_resolve_me_without_me_changes_nothing():
    rules = parse_ingress(COILED_EXAMPLE)
    assert resolve_me(rules, ["203.0.113.7"]) == rules


def test_admits():
    rules = parse_ingress(
        [
            {"ports": [8786, "9000-9010"], "cidr": "10.1.0.0/16"},
            {"ports": [8786], "cidr": "2001:db8::/32", "protocol": "udp"},
            {"ports": [8786], "cidr": "sg-0123456789abcdef0"},
        ]
    )
    assert admits(rules, "tcp", 8786, "10.1.255.255")
    assert admits(rules, "tcp", 9005, "10.1.0.1")
    assert not admits(rules, "tcp", 8787, "10.1.0.1")
    assert not admits(rules, "tcp", 8786, "10.2.0.0")
    assert not admits(rules, "udp", 8786, "10.1.0.1")
    assert admits(rules, "udp", 8786, "2001:db8::1")
    assert not admits(rules, "tcp", 8786, "2001:db8::1")
    assert not admits(rules, "udp", 8786, "2001:db9::1")
    assert not admits([], "tcp", 8786, "10.1.0.1")


def test_a_rule_for_all_protocols_admits_every_protocol_and_port():
    """AWS's ``-1`` (read from the cloud, e.g. 0.0.0.0/0 all traffic) admits TCP on any port."""
    rules = [Rule("all", 0, 65535, "10.0.0.0/8")]
    assert admits(rules, "tcp", 8786, "10.1.2.3")
    assert admits(rules, "udp", 53, "10.1.2.3")
    assert not admits(rules, "tcp", 8786, "192.0.2.1")


def test_admits_everyone_covers_both_families():
    rules = parse_ingress(one(cidr="everyone"))
    assert admits(rules, "tcp", 8786, "198.51.100.1")
    assert admits(rules, "tcp", 8786, "2001:db8::1")


# --------------------------------------------------------------------------------------------------
# Compaction and expansion


def test_coiled_example_compacts_to_two_rules():
    assert [r.key for r in compact(parse_ingress(COILED_EXAMPLE))] == [
        ("tcp", 8786, 8786, "10.2.0.0/16"),
        ("tcp", 8786, 8787, "10.1.0.0/16"),
    ]


def test_compaction_merges_contiguous_ports_and_adjacent_networks():
    rules = parse_ingress(
        [
            {"ports": [8786, 8787, "8788-8790"], "cidr": "10.0.0.0/25", "description": "lab"},
            {"ports": ["8786-8790"], "cidr": "10.0.0.128/25", "description": "lab; annex"},
            {"ports": [8786], "cidr": "10.0.0.7"},  # inside the others: dropped
        ]
    )
    [rule] = compact(rules)
    assert rule.key == ("tcp", 8786, 8790, "10.0.0.0/24")
    assert rule.description == "lab; annex"


def test_compaction_keeps_protocols_families_and_groups_apart():
    rules = parse_ingress(
        [
            {"ports": [53], "cidr": "10.0.0.0/24", "protocol": "udp"},
            {"ports": [54], "cidr": "10.0.0.0/24"},
            {"ports": [53], "cidr": "2001:db8::/64"},
            {"ports": [53, 54], "cidr": "sg-0123456789abcdef0"},
        ]
    )
    assert [r.key for r in compact(rules)] == [
        ("tcp", 53, 53, "2001:db8::/64"),
        ("tcp", 53, 54, "sg-0123456789abcdef0"),
        ("tcp", 54, 54, "10.0.0.0/24"),
        ("udp", 53, 53, "10.0.0.0/24"),
    ]


def test_compaction_does_not_grow_a_narrow_rule_inside_a_wide_one():
    rules = [Rule("tcp", 1, 3, "10.0.0.0/24"), Rule("tcp", 2, 2, "10.0.1.0/24")]
    assert compact(rules) == rules


def test_compaction_after_expansion_keeps_a_nested_network():
    # Dropping the covered single port 2 of 10.0.0.0/24 before merging ports would split 1-3.
    rules = [Rule("tcp", 1, 3, "10.0.0.0/24"), Rule("tcp", 2, 2, "10.0.0.0/23")]
    assert compact(expand(rules)) == compact(rules) == rules


def test_a_covered_rule_keeps_its_description_and_is_named_with_the_covering_rule():
    office = parse_ingress(one([8786, 8787], "10.1.0.0/16", description="office VPN"))
    world = parse_ingress(one(["8786-8787"], "0.0.0.0/0"))
    found = compaction([*world, *office])
    assert [(r.key, r.description) for r in found.rules] == [(("tcp", 8786, 8787, "0.0.0.0/0"), "")]
    assert found.covered == (
        Covered(Rule("tcp", 8786, 8787, "10.1.0.0/16", "office VPN"), world[0]),
    )
    assert [c.rule.description for c in found.covered] == ["office VPN"]
    assert str(found.covered[0]) == (
        "tcp 8786-8787 from 10.1.0.0/16 (office VPN) is covered by tcp 8786-8787 from "
        "0.0.0.0/0 and is not sent separately"
    )


def test_a_written_rule_that_is_sent_as_written_keeps_exactly_its_description():
    # The wider rule is the person's; the narrower ones inside it lend it nothing.
    rules = [
        Rule("tcp", 8000, 9000, "10.0.0.0/8", "company"),
        Rule("tcp", 8786, 8786, "10.1.0.0/16", "office VPN"),
        Rule("tcp", 8786, 8787, "10.0.0.0/8", "scheduler"),
        Rule("tcp", 8800, 8800, "10.0.0.0/8"),
    ]
    found = compaction(rules)
    assert [(r.key, r.description) for r in found.rules] == [
        (("tcp", 8000, 9000, "10.0.0.0/8"), "company")
    ]
    assert {(c.rule.key, c.rule.description) for c in found.covered} == {
        (("tcp", 8786, 8786, "10.1.0.0/16"), "office VPN"),
        (("tcp", 8786, 8787, "10.0.0.0/8"), "scheduler"),
        (("tcp", 8800, 8800, "10.0.0.0/8"), ""),
    }
    assert all(c.by == found.rules[0] for c in found.covered)


def test_a_rule_covered_only_after_ports_merge_names_the_merged_rule():
    # 10.1/16 on 8786 and on 8787 only together lie inside the wide rule, which is 8786 and 8787.
    rules = [
        Rule("tcp", 8786, 8786, "10.0.0.0/8"),
        Rule("tcp", 8787, 8787, "10.0.0.0/8"),
        Rule("tcp", 8786, 8787, "10.1.0.0/16", "office VPN"),
    ]
    found = compaction(rules)
    assert [(r.key, r.description) for r in found.rules] == [
        (("tcp", 8786, 8787, "10.0.0.0/8"), "")
    ]
    assert [str(c) for c in found.covered] == [
        "tcp 8786-8787 from 10.1.0.0/16 (office VPN) is covered by tcp 8786-8787 from "
        "10.0.0.0/8 and is not sent separately"
    ]


def test_pieces_that_merge_still_share_their_descriptions():
    rules = [
        Rule("tcp", 8786, 8786, "10.0.0.0/25", "lab"),
        Rule("tcp", 8786, 8786, "10.0.0.128/25", "annex"),
        Rule("tcp", 8787, 8787, "10.0.0.0/24", "dashboard"),
    ]
    found = compaction(rules)
    assert [(r.key, r.description) for r in found.rules] == [
        (("tcp", 8786, 8787, "10.0.0.0/24"), "lab; annex; dashboard")
    ]
    assert found.covered == ()


def test_compaction_of_thousands_of_rules_takes_well_under_a_second():
    import ipaddress
    import random
    import time

    rng = random.Random(3)
    scattered = [
        Rule("tcp", port, port, f"{ipaddress.IPv4Address(a)}/32")
        for a in rng.sample(range(1 << 24, 223 << 24), 5000)
        for port in (8786, 8787)
    ]
    adjacent = [Rule("tcp", 8786, 8787, f"10.0.{i // 256}.{i % 256}/32") for i in range(4096)]
    start = time.process_time()
    assert len(compact(scattered)) == 5000
    assert [r.source for r in compact(adjacent)] == ["10.0.0.0/20"]
    # CPU time, so that a busy machine does not fail it; the quadratic version took minutes.
    assert time.process_time() - start < 2.0


def test_compaction_refuses_unresolved_me():
    with pytest.raises(ValueError, match="resolve_me"):
        compact(parse_ingress(one(cidr="me")))


def test_expand_writes_short_ranges_port_by_port():
    rules = [Rule("tcp", 8786, 8788, "10.0.0.0/8", "x"), Rule("tcp", 1000, 2000, "10.0.0.0/8")]
    assert [r.key for r in expand(rules)] == [
        ("tcp", 1000, 2000, "10.0.0.0/8"),
        ("tcp", 8786, 8786, "10.0.0.0/8"),
        ("tcp", 8787, 8787, "10.0.0.0/8"),
        ("tcp", 8788, 8788, "10.0.0.0/8"),
    ]
    assert all(r.description == "x" for r in expand(rules) if r.from_port > 8000)
    assert compact(expand(rules)) == compact(rules)


def test_canonical_is_idempotent():
    rules = parse_ingress(COILED_EXAMPLE)
    assert canonical(rules) == rules
    assert canonical(reversed(rules)) == rules


# --------------------------------------------------------------------------------------------------
# Back to Coiled's format


def test_to_coiled_groups_ports_by_source():
    assert to_coiled(parse_ingress(COILED_EXAMPLE)) == [
        {"ports": [8786, 8787], "cidr": "10.1.0.0/16"},
        {"ports": [8786], "cidr": "10.2.0.0/16"},
    ]


def test_to_coiled_round_trip_keeps_every_kind_of_rule():
    rules = parse_ingress(
        [
            {"ports": [8786, 8787, "9000-9100"], "cidr": "10.1.0.0/16", "description": "office"},
            {"ports": [53], "cidr": "2001:db8::/32", "protocol": "udp"},
            {"ports": [8786], "cidr": "everyone"},
            {"ports": [8787], "cidr": "me"},
            {"ports": [22], "cidr": "sg-0123456789abcdef0", "description": "bastion"},
            {"ports": [8786], "cidr": "203.0.113.7"},
        ]
    )
    coiled = to_coiled(rules)
    again = parse_ingress(coiled)
    assert again == rules
    assert [r.description for r in again] == [r.description for r in rules]
    assert {
        "ports": [8786, 8787, "9000-9100"],
        "cidr": "10.1.0.0/16",
        "description": "office",
    } in coiled
    assert {"ports": [53], "cidr": "2001:db8::/32", "protocol": "udp"} in coiled


def test_to_coiled_round_trip_through_yaml_text():
    import yaml

    rules = parse_ingress(COILED_EXAMPLE)
    assert parse_ingress(yaml.safe_dump(to_coiled(rules))) == rules


def test_to_coiled_of_one_rule_and_ports_text():
    assert to_coiled([Rule("tcp", 8000, 8100, "10.0.0.0/8")]) == [
        {"ports": ["8000-8100"], "cidr": "10.0.0.0/8"}
    ]
    assert to_coiled([Rule("udp", 53, 53, "me", "dns")]) == [
        {"ports": [53], "cidr": "me", "protocol": "udp", "description": "dns"}
    ]
    assert Rule("tcp", 8786, 8786, "10.0.0.0/8").ports == "8786"
