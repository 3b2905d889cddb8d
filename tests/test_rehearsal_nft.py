"""The translation of security-group rules into nftables, rule by rule against AWS's meaning.

Each test names what AWS does with one kind of rule and checks the statement that enforces it; the
whole ruleset is then loaded with ``nft -c -f -`` (check only) in a network namespace made for that
and deleted after, so nft itself accepts what the text-level tests read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from coiled_jupyter.rehearsal.nft import TABLE, ruleset

SG = "sg-0123456789abcdef0"


def statements(permissions, **kwargs) -> list[str]:
    """The accept statements the rules became (the fixed head of the chain left out)."""
    lines = [line.strip() for line in ruleset(permissions, **kwargs).text.splitlines()]
    head = lines.index(
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, "
        "nd-router-solicit, nd-router-advert } accept"
    )
    return lines[head + 1 : -2]


def tcp(low, high, *cidrs, v6=(), protocol="tcp"):
    return {
        "IpProtocol": protocol,
        "FromPort": low,
        "ToPort": high,
        "IpRanges": [{"CidrIp": c, "Description": "x"} for c in cidrs],
        "Ipv6Ranges": [{"CidrIpv6": c} for c in v6],
    }


def test_the_chain_drops_by_default_and_keeps_replies_and_loopback():
    text = ruleset([]).text
    assert f"table inet {TABLE} {{" in text
    assert "policy drop;" in text
    assert "ct state established,related accept" in text
    assert "iif lo accept" in text
    # An empty group admits nothing: the chain holds no accept of its own.
    assert statements([]) == []


def test_a_tcp_port_from_an_ipv4_network():
    assert statements([tcp(8786, 8786, "10.1.0.0/16")]) == [
        "ip saddr 10.1.0.0/16 tcp dport 8786 accept"
    ]


def test_a_port_range_and_several_networks_in_one_permission():
    assert statements([tcp(8000, 8100, "10.1.0.0/16", "192.0.2.7/32")]) == [
        "ip saddr { 10.1.0.0/16, 192.0.2.7 } tcp dport 8000-8100 accept"
    ]


def test_host_bits_are_masked_as_aws_does():
    assert statements([tcp(22, 22, "10.1.0.2/16")]) == ["ip saddr 10.1.0.0/16 tcp dport 22 accept"]


def test_ipv6_networks_match_ipv6_sources_only():
    assert statements([tcp(8787, 8787, v6=["2001:db8::/32"])]) == [
        "ip6 saddr 2001:db8::/32 tcp dport 8787 accept"
    ]
    assert statements([tcp(8787, 8787, "10.0.0.0/8", v6=["::/0"])]) == [
        "ip saddr 10.0.0.0/8 tcp dport 8787 accept",
        "ip6 saddr ::/0 tcp dport 8787 accept",
    ]


def test_udp_and_protocol_numbers():
    assert statements([tcp(53, 53, "10.0.0.0/8", protocol="udp")]) == [
        "ip saddr 10.0.0.0/8 udp dport 53 accept"
    ]
    assert statements([tcp(443, 443, "10.0.0.0/8", protocol="6")]) == [
        "ip saddr 10.0.0.0/8 tcp dport 443 accept"
    ]
    # Protocols without ports (GRE is 47) admit the whole protocol; EC2 ignores their ports.
    assert statements([tcp(-1, -1, "10.0.0.0/8", protocol="47")]) == [
        "ip saddr 10.0.0.0/8 meta l4proto 47 accept"
    ]


def test_all_traffic_has_no_protocol_or_port_match():
    assert statements([{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]) == [
        "ip saddr 0.0.0.0/0 accept"
    ]


def test_icmp_reads_type_and_code():
    icmp = {"IpProtocol": "icmp", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}
    assert statements([{**icmp, "FromPort": -1, "ToPort": -1}]) == [
        "ip saddr 10.0.0.0/8 meta l4proto icmp accept"
    ]
    assert statements([{**icmp, "FromPort": 8, "ToPort": -1}]) == [
        "ip saddr 10.0.0.0/8 icmp type 8 accept"
    ]
    assert statements([{**icmp, "FromPort": 3, "ToPort": 4}]) == [
        "ip saddr 10.0.0.0/8 icmp type 3 icmp code 4 accept"
    ]


def test_icmp_applies_to_its_own_address_family_only():
    rule = {
        "IpProtocol": "icmpv6",
        "FromPort": 128,
        "ToPort": -1,
        "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
        "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32"}],
    }
    result = ruleset([rule])
    assert statements([rule]) == ["ip6 saddr 2001:db8::/32 icmpv6 type 128 accept"]
    assert result.notes == (
        "an icmpv6 rule from IPv4 sources admits nothing (AWS applies it to IPv6 only).",
    )


def test_a_group_referencing_itself_admits_its_members():
    rule = {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": SG}]}
    found = statements([rule], group_id=SG, members=["172.31.0.10", "fd00:cafe::10", "172.31.0.20"])
    assert found == [
        "ip saddr { 172.31.0.10, 172.31.0.20 } accept",
        "ip6 saddr fd00:cafe::10 accept",
    ]
    # Neighbouring members are one network to nft as to AWS.
    found = statements([rule], group_id=SG, members=["172.31.0.10", "172.31.0.11"])
    assert found == ["ip saddr 172.31.0.10/31 accept"]


def test_another_group_or_a_prefix_list_admits_nothing_and_says_so():
    rule = {
        "IpProtocol": "tcp",
        "FromPort": 8786,
        "ToPort": 8786,
        "UserIdGroupPairs": [{"GroupId": "sg-0000000000000000f"}],
        "PrefixListIds": [{"PrefixListId": "pl-12345678"}],
    }
    result = ruleset([rule], group_id=SG, members=["172.31.0.10"])
    assert statements([rule], group_id=SG, members=["172.31.0.10"]) == []
    assert result.notes == (
        "a rule from another group ('sg-0000000000000000f') admits nothing here: no machine of "
        "that group takes part.",
        "a rule from prefix list 'pl-12345678' admits nothing here: its addresses are not known.",
    )


def test_what_cannot_be_read_admits_nothing():
    bad = [
        tcp(9000, 8000, "10.0.0.0/8"),
        tcp("8786; accept", 8786, "10.0.0.0/8"),
        {"IpProtocol": "tcp; flush ruleset", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
    ]
    result = ruleset(bad)
    assert statements(bad) == []
    assert len(result.notes) == 3
    assert all("admits nothing" in note for note in result.notes)
    assert "flush" not in result.text


def test_a_description_never_reaches_the_ruleset():
    rule = tcp(22, 22, "10.0.0.0/8")
    rule["IpRanges"][0]["Description"] = '" ; flush ruleset ; "'
    assert "flush" not in ruleset([rule]).text


# --------------------------------------------------------------------------------------------------
# nft itself reads the ruleset


def nft_check(text: str) -> subprocess.CompletedProcess:
    """``nft -c -f -`` in a namespace of its own, deleted afterwards."""
    name = f"cjr-{os.getpid()}-t{uuid.uuid4().hex[:8]}"  # owned by this process, as the rehearsal's
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        return subprocess.run(
            ["ip", "netns", "exec", name, "nft", "-c", "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
        )
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


needs_nft = pytest.mark.skipif(
    shutil.which("nft") is None or shutil.which("ip") is None or os.geteuid() != 0,
    reason="loading an nft ruleset needs root and the nftables and iproute2 packages.",
)


@needs_nft
def test_nft_accepts_every_kind_of_rule():
    permissions = [
        tcp(8786, 8787, "10.1.0.0/16", "192.0.2.7/32", v6=["2001:db8::/32"]),
        tcp(53, 53, "10.0.0.0/8", protocol="udp"),
        {"IpProtocol": "icmp", "FromPort": 3, "ToPort": 4, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "58", "FromPort": 128, "ToPort": -1, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
        {"IpProtocol": "47", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": SG}]},
    ]
    text = ruleset(permissions, group_id=SG, members=["172.31.0.10", "fd00:cafe::10"]).text
    checked = nft_check(text)
    assert checked.returncode == 0, checked.stderr


@needs_nft
def test_nft_check_can_fail():
    """The check above would catch a ruleset nft refuses."""
    assert nft_check(ruleset([]).text.replace("policy drop;", "policy maybe;")).returncode != 0
