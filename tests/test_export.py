"""Exports for IT (Terraform, Coiled, CSV/Markdown port matrix, AWS CLI) and imports back.

Each export is read back twice: by our importer (the round trip) and by an independent reader of its
format (python-hcl2 for Terraform; shlex + json, then the real EC2 API of the sandbox, for the AWS CLI
command; the csv module for the matrix), so a format that only our own reader understands fails.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex

import hcl2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from coiled_jupyter.errors import CoiledJupyterError
from coiled_jupyter.export import export, import_rules
from coiled_jupyter.rules import Rule, compact, parse_ingress

FORMATS_BACK = ("terraform", "csv", "markdown", "aws-cli")
# Characters AWS accepts in descriptions, with the two that HCL reads as templates.
DESCRIPTION_TEXT = st.text(alphabet="abcXYZ019 ._-:/()#,@[]+=&;{}!$*", max_size=40).map(
    str.strip
) | st.sampled_from(["cost ${x}", "$${y}", "{}"])


@st.composite
def networks(draw) -> str:
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(0, bits))
    address = draw(st.integers(0, 2**bits - 1))
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return str(cls((address, prefix), strict=False))


@st.composite
def rule_items(draw) -> dict:
    low = draw(st.integers(1, 65535))
    high = draw(st.integers(low, min(65535, low + draw(st.sampled_from([0, 1, 100, 5000])))))
    source = draw(networks() | st.sampled_from(["sg-0123456789abcdef0", "sg-12345678"]))
    item = {
        "ports": [low if low == high else f"{low}-{high}"],
        "cidr": source,
        "protocol": draw(st.sampled_from(["tcp", "udp"])),
    }
    description = draw(DESCRIPTION_TEXT)
    if description:
        item["description"] = description
    return item


def _described(rules: list[Rule]) -> list[tuple]:
    return [(r.key, r.description) for r in rules]


def _exported(rules, format):
    return export(
        rules, format, cluster="demo", region="us-east-1", origin="notebook session (this kernel)"
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(rule_items(), min_size=1, max_size=6))
def test_every_format_but_coiled_reads_back_the_same_rules_and_descriptions(items):
    rules = compact(parse_ingress(items))
    for format in FORMATS_BACK:
        exported = _exported(rules, format)
        assert exported.lost == ()
        assert _described(import_rules(exported.text, format)) == _described(rules), format


@settings(max_examples=60, deadline=None)
@given(st.lists(rule_items(), min_size=1, max_size=6))
def test_coiled_export_reads_back_what_coiled_can_carry_and_names_the_rest(items):
    rules = compact(parse_ingress(items))
    exported = _exported(rules, "coiled")
    carried = [r for r in rules if r.protocol == "tcp" and not r.source.startswith("sg-")]
    carried = [r for r in carried if r.to_port - r.from_port < 1024]
    if carried:
        assert [r.key for r in compact(import_rules(exported.text, "coiled"))] == [
            r.key for r in carried
        ]
    left_out = [r for r in rules if r not in carried]
    for rule in left_out:
        assert any(str(rule) in sentence for sentence in exported.lost), rule
    if any(r.description for r in carried):
        assert any("descriptions" in sentence for sentence in exported.lost)


def test_terraform_is_read_by_an_hcl_parser_as_one_resource_per_rule():
    rules = compact(
        parse_ingress(
            [
                {"ports": [8786], "cidr": "10.1.0.0/16", "description": "VPN ${user}"},
                {"ports": ["8000-8100"], "cidr": "2001:db8::/32"},
                {"ports": [53], "cidr": "sg-0123456789abcdef0", "protocol": "udp"},
            ]
        )
    )
    tree = hcl2.loads(_exported(rules, "terraform").text)
    resources = [
        body
        for block in tree["resource"]
        for kind, named in block.items()
        if kind == '"aws_vpc_security_group_ingress_rule"'
        for body in named.values()
    ]
    assert len(resources) == len(rules)
    fields = {
        (r["ip_protocol"], r["from_port"], r["to_port"]): {
            k: r[k]
            for k in ("cidr_ipv4", "cidr_ipv6", "referenced_security_group_id", "description")
            if k in r
        }
        for r in resources
    }
    assert fields == {
        ('"tcp"', 8000, 8100): {"cidr_ipv6": '"2001:db8::/32"'},
        ('"tcp"', 8786, 8786): {"cidr_ipv4": '"10.1.0.0/16"', "description": '"VPN $${user}"'},
        ('"udp"', 53, 53): {"referenced_security_group_id": '"sg-0123456789abcdef0"'},
    }
    assert all(r["security_group_id"] == "${var.security_group_id}" for r in resources)


def test_aws_cli_export_is_accepted_by_the_ec2_api_as_the_same_rules(sandbox):
    """The command's --ip-permissions, parsed as a shell would, sent to EC2 (the sandbox) as is:
    the group then holds exactly the exported rules."""
    from coiled_jupyter.provision import aws
    from coiled_jupyter.provision.target import target

    rules = compact(
        parse_ingress(
            [
                {"ports": [8786, 8787], "cidr": "10.1.0.0/16", "description": "VPN"},
                {"ports": [8786], "cidr": "2001:db8::/32"},
            ]
        )
    )
    words = shlex.split(_exported(rules, "aws-cli").text.replace("\\\n", " "), comments=True)
    assert words[:3] == ["aws", "ec2", "authorize-security-group-ingress"]
    permissions = json.loads(words[words.index("--ip-permissions") + 1])
    ec2 = aws.client("ec2", target().connected().connection())
    group = ec2.create_security_group(GroupName="export-check", Description="export check")
    ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=permissions)
    held = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group["GroupId"]]}]
    )["SecurityGroupRules"]
    assert sorted(
        (r["IpProtocol"], r["FromPort"], r["ToPort"], r.get("CidrIpv4") or r.get("CidrIpv6"))
        for r in held
        if not r["IsEgress"]
    ) == sorted(("tcp", r.from_port, r.to_port, r.source) for r in rules)


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("resource {", "is not valid HCL"),
        ('variable "x" {}\n', "holds no aws_vpc_security_group_ingress_rule"),
        (
            'resource "aws_vpc_security_group_ingress_rule" "r" {\n  ip_protocol = "tcp"\n'
            "  from_port = 8786\n  to_port = 8786\n  cidr_ipv4 = var.office\n}\n",
            "is the expression",
        ),
        (
            'resource "aws_vpc_security_group_ingress_rule" "r" {\n  ip_protocol = "tcp"\n'
            '  from_port = 8786\n  to_port = 8786\n  cidr_ipv4 = "${var.office}/16"\n}\n',
            "holds the template",
        ),
        (
            'resource "aws_vpc_security_group_ingress_rule" "r" {\n  ip_protocol = "tcp"\n'
            '  from_port = 8786\n  to_port = 8786\n  cidr_ipv4 = "10.1.0.2/16"\n}\n',
            "host bits set",
        ),
        (
            'resource "aws_vpc_security_group_ingress_rule" "r" {\n  ip_protocol = "tcp"\n'
            '  from_port = 8786\n  to_port = 8786\n  prefix_list_id = "pl-1"\n}\n',
            "prefix_list_id",
        ),
    ],
)
def test_terraform_that_is_not_a_plain_rule_is_refused_in_one_sentence(text, sentence):
    with pytest.raises(CoiledJupyterError) as caught:
        import_rules(text, "terraform")
    assert sentence in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_an_unknown_format_is_refused_with_the_formats():
    with pytest.raises(CoiledJupyterError, match="terraform, coiled, csv, markdown, aws-cli"):
        export([], "hcl", cluster="c", region="us-east-1")


# --------------------------------------------------------------------------------------------------
# Through the magics, against the sandbox


def test_export_to_a_file_and_import_it_back_through_the_magics(ip, sandbox, dask_config, tmp_path):
    from coiled_jupyter import session

    ip.run_line_magic("coiled_ingress", "set [{ports: [8786, 8787], cidr: 10.1.0.0/16}]")
    before = session.show(reach=False).settings.rules
    target = tmp_path / "firewall.tf"
    result = ip.run_line_magic("coiled_ingress", f"export terraform --to {target}")
    assert target.read_text() == result.text
    assert (
        "8786-8787" in result.to_payload()["summary"] or "1 rule" in result.to_payload()["summary"]
    )
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    ip.run_line_magic("coiled_ingress", "clear")
    imported = ip.run_line_magic("coiled_ingress", f"import terraform {target}")
    assert [r.key for r in imported.settings.rules] == [r.key for r in compact(before)]


def test_export_shows_the_text_in_every_rendering(ip, sandbox, dask_config):
    ip.run_line_magic(
        "coiled_ingress", "set [{ports: [8786], cidr: 10.1.0.0/16, description: R&D}]"
    )
    result = ip.run_line_magic("coiled_ingress", "export markdown")
    bundle = result._repr_mimebundle_()
    assert "| 8786 | tcp | 10.1.0.0/16 |" in bundle["text/plain"]
    assert "R&amp;D" in bundle["text/html"] and "R&D" not in bundle["text/html"]
    assert bundle["application/vnd.coiled-jupyter.rules+json"]["body"] == result.text


@pytest.mark.parametrize(
    ("line", "sentence"),
    [
        ("export", "takes one format"),
        ("export hcl", "cannot export format 'hcl'"),
        ("export csv --to {tmp}", "is a folder"),
        ("export csv --to {tmp}/missing/x.csv", "does not exist"),
        ("import csv", "takes a format and a file"),
        ("import csv {tmp}/absent.csv", "cannot be read"),
        ("import csv {tmp}", "is not a regular file"),
        ("plan --to x", "does not take --to"),
    ],
)
def test_export_and_import_mistakes_are_one_sentence_and_change_nothing(
    ip, sandbox, dask_config, tmp_path, line, sentence
):
    from coiled_jupyter import session

    ip.run_line_magic("coiled_ingress", "set [{ports: [8786], cidr: 10.1.0.0/16}]")
    before = session.show(reach=False).settings.rules
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("coiled_ingress", line.format(tmp=tmp_path))
    assert sentence in str(caught.value)
    assert session.show(reach=False).settings.rules == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dask-config"]


def test_import_of_a_fifo_is_refused_without_blocking(ip, dask_config, tmp_path):
    fifo = tmp_path / "rules.csv"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="is not a regular file"):
        ip.run_line_magic("coiled_ingress", f"import csv {fifo}")


def test_export_with_me_and_no_known_address_is_refused(ip, sandbox, dask_config):
    ip.run_line_magic("coiled_ingress", "add 8786 me")
    with pytest.raises(UsageError, match="public address is unknown"):
        ip.run_line_magic("coiled_ingress", "export terraform")
