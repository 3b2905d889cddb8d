"""The strict reader: YAML 1.2 core schema or stricter, no duplicate keys or aliases, bounded input.

Each case here was read differently (or hung, or raised a traceback) with ``yaml.safe_load``.
"""

from __future__ import annotations

import pytest

from coiled_jupyter.errors import CoiledJupyterError
from coiled_jupyter.rules import MAX_RULES, IngressError, parse_ingress, parse_ports
from coiled_jupyter.settings import parse_coiled_options
from coiled_jupyter.strict_yaml import EXCERPT, TEXT_LIMITS, StrictYAMLError, excerpt, load


def refusal(text: str) -> str:
    with pytest.raises(IngressError) as caught:
        parse_ingress(text)
    assert len(caught.value.problems) == 1
    return caught.value.problems[0]


@pytest.mark.parametrize("written", ["0022", "022", "-022", "00"])
def test_a_leading_zero_is_refused_not_read_as_octal(written):
    problem = refusal(f"[{{ports: [{written}], cidr: 10.0.0.0/8}}]")
    assert "leading zero" in problem and "octal" in problem


def test_a_leading_zero_is_refused_on_the_magic_path_too():
    """``add 0022 ...`` reaches parse_ports as the digit string '0022': the same refusal."""
    with pytest.raises(IngressError, match="leading zero.*write 22"):
        parse_ports("0022")
    with pytest.raises(IngressError, match="leading zero"):
        parse_ports("0080-0090")
    with pytest.raises(IngressError, match="leading zero"):
        parse_ingress([{"ports": ["0022"], "cidr": "10.0.0.0/8"}])


@pytest.mark.parametrize("written", ["0x1f", "0o17", "0b101", "0X1F"])
def test_numbers_in_other_bases_are_refused(written):
    assert "another base than 10" in refusal(f"- ports: [{written}]\n  cidr: 10.0.0.0/8\n")


def test_sexagesimal_is_text_and_refused_as_a_port_with_the_range_it_looks_like():
    problem = refusal("- ports: [1:30]\n  cidr: 10.0.0.0/8\n")
    assert "base 60" in problem and "'1-30'" in problem
    assert load("description: 1:30", "x") == {"description": "1:30"}


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n", "Yes", "ON"])
def test_yes_no_on_off_are_text_not_booleans(word):
    assert load(f"a: {word}", "x") == {"a": word}


@pytest.mark.parametrize(
    "written, value",
    [("true", True), ("False", False), ("~", None), ("null", None), ("8786", 8786), ("+5", 5)],
)
def test_core_schema_scalars(written, value):
    assert load(f"a: {written}", "x") == {"a": value}


def test_quoted_digits_stay_text():
    assert load("a: '0022'", "x") == {"a": "0022"}


def test_a_duplicate_key_is_refused_instead_of_keeping_the_last():
    problem = refusal("{ports: [8786], cidr: 10.0.0.0/8, cidr: 0.0.0.0/0}")
    assert "key 'cidr' twice" in problem


def test_dash_and_underscore_spellings_of_one_key_are_duplicates():
    with pytest.raises(IngressError, match="twice"):
        parse_coiled_options("use_scheduler_public_ip: true\nuse-scheduler-public-ip: false\n")


def test_a_billion_laughs_is_refused_at_its_first_anchor():
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for index in range(1, 9):
        before, name = chr(ord("a") + index - 1), chr(ord("a") + index)
        levels.append(f"{name}: &{name} [" + ",".join([f"*{before}"] * 9) + "]")
    assert "anchor (&) or alias (*)" in refusal("\n".join(levels))


def test_tags_are_refused():
    assert "tag" in refusal("- ports: !!int 22\n  cidr: 10.0.0.0/8\n")
    assert "tag" in refusal("!!python/object/apply:os.system ['true']")


def test_a_body_over_the_size_limit_is_refused_before_reading_and_not_echoed():
    body = "- ports: [8786]\n  cidr: 10.0.0.0/8\n" * 300_000  # 10 MB
    problem = refusal(body)
    assert "64 KiB" in problem and len(problem) < 300


@pytest.mark.parametrize("depth", [33, 500, 10_000])
def test_deep_flow_nesting_is_refused_before_the_scanner(depth):
    assert "deeper than" in refusal("[" * depth + "]" * depth)


@pytest.mark.parametrize("text", ["- " * 40 + "x", "".join(" " * i + "a:\n" for i in range(40))])
def test_deep_block_nesting_is_refused(text):
    assert "deeper than" in refusal(text)


def test_a_five_thousand_digit_port_is_a_sentence_not_a_value_error():
    problem = refusal("- ports: [" + "9" * 5000 + "]\n  cidr: 10.0.0.0/8\n")
    assert "5,000 digits" in problem and len(problem) < 300
    with pytest.raises(IngressError, match="not a port"):
        parse_ports("9" * 5000)


def test_too_many_values_are_refused_while_composing():
    text = "[" + "1," * (TEXT_LIMITS.nodes + 10) + "1]"
    assert "more than" in refusal(text[: TEXT_LIMITS.bytes - 1] + "]")


def test_too_many_rules_are_refused_before_parsing_them():
    rules = [
        {"ports": [8786], "cidr": f"10.0.{i // 256}.{i % 256}/32"} for i in range(MAX_RULES + 1)
    ]
    with pytest.raises(IngressError, match="at most 1,000"):
        parse_ingress(rules)
    product = {"ports": list(range(1, 101)), "cidr": [f"10.0.0.{i}" for i in range(20)]}
    with pytest.raises(IngressError, match="ports and sources are combined"):
        parse_ingress(product)


def test_a_control_character_is_one_sentence():
    assert "'\\x07'" in refusal("- ports: [8786]\n  cidr: 10.0.0.0/8\n  description: \x07\n")


def test_refusals_quote_at_most_a_short_excerpt():
    long_value = "x" * 10_000
    for text in (
        f"- ports: [{long_value}]\n  cidr: 10.0.0.0/8\n",
        f"- ports: [8786]\n  cidr: {long_value}\n",
        f"- ports: [8786]\n  cidr: 10.0.0.0/8\n  {long_value}: 1\n",
        f"{{{long_value}}}",
    ):
        with pytest.raises(IngressError) as caught:
            parse_ingress(text)
        for problem in caught.value.problems:
            assert "x" * (EXCERPT + 1) not in problem
            assert len(problem) < 400


def test_excerpt_of_large_values_is_bounded():
    assert len(excerpt(list(range(100_000)))) <= 2 * EXCERPT + 3
    assert len(excerpt("y" * 1_000_000)) < EXCERPT + 40


def test_the_error_is_the_projects_own():
    with pytest.raises(CoiledJupyterError):
        load("a: 0022", "the cell")
    assert issubclass(StrictYAMLError, CoiledJupyterError)
    assert issubclass(IngressError, CoiledJupyterError)


def test_valid_documents_read_as_before():
    text = (
        "coiled:\n"
        "  backend-options:\n"
        "    ingress:\n"
        "      - ports: [8786, 8787]\n"
        "        cidr: 10.1.0.0/16\n"
        "        description: office 1:30 yes\n"
        "  use_scheduler_public_ip: false\n"
    )
    rules, public_ip = parse_coiled_options(text)
    assert [str(r) for r in rules] == ["tcp 8786 from 10.1.0.0/16", "tcp 8787 from 10.1.0.0/16"]
    assert rules[0].description == "office 1:30 yes"
    assert public_ip is False


@pytest.mark.parametrize("word", ["yes", "no", "on", "off"])
def test_yes_no_on_off_are_not_a_value_of_the_toggle(word):
    with pytest.raises(IngressError, match="use true"):
        parse_coiled_options(f"use_scheduler_public_ip: {word}\n")
