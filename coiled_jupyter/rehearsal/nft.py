"""Security-group rules as EC2 holds them, translated into an nftables ruleset that enforces them.

An EC2 security group is a stateful allow-list on a machine's inbound traffic: anything no rule admits
is dropped without an answer, and the replies of an admitted connection always come back. The
translation keeps that meaning, rule by rule:

* ``IpProtocol`` ``tcp``/``udp`` (or ``6``/``17``) admit ``FromPort``-``ToPort``; ``icmp`` (``1``)
  reads ``FromPort`` as the ICMP type and ``ToPort`` as the code, ``-1`` meaning any, and only from
  IPv4 sources; ``icmpv6`` (``58``) the same from IPv6 sources; ``-1`` is every protocol and port;
  any other protocol number admits that protocol, ports not applying.
* ``IpRanges`` are IPv4 sources (``ip saddr``), ``Ipv6Ranges`` IPv6 ones (``ip6 saddr``); AWS masks
  host bits, and so does the translation.
* A group referencing itself admits the group's own machines, whose addresses the caller gives
  (``members``); another group, or a prefix list, has no machine here, so it admits nothing and is
  named in the notes (fail closed).
* Stateful: established and related packets are accepted; loopback is the machine itself. IPv6
  neighbour discovery is accepted too: the VPC answers it below the group, where no rule applies.

Every value written into the ruleset is a number or an address produced here, never text from
outside, so a description or a crafted id cannot inject a statement.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TABLE = "cjr_rehearsal"
_TCP_UDP = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp"}
_ICMP = {"icmp": "icmp", "1": "icmp", "icmpv6": "icmpv6", "58": "icmpv6"}
_ICMP_FAMILY = {"icmp": 4, "icmpv6": 6}
_PROTOCOL_NAME = {4: "icmp", 6: "icmpv6"}
_NEIGHBOUR_DISCOVERY = (
    "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert"
)


@dataclass(frozen=True)
class Ruleset:
    """The nft script (it replaces the table atomically when loaded) and what it could not enforce."""

    text: str
    notes: tuple[str, ...] = ()


def ruleset(
    permissions: Iterable[dict], *, group_id: str | None = None, members: Sequence[str] = ()
) -> Ruleset:
    """``IpPermissions`` (EC2's inbound rules of one group) as an nft ``inet`` table.

    ``group_id`` is the group's own id and ``members`` the addresses of its machines, which a rule
    referencing the group itself admits.
    """
    member_ips = [ipaddress.ip_address(m) for m in members]
    statements: list[str] = []
    notes: list[str] = []
    for permission in permissions:
        match, family, note = _protocol_match(permission)
        if match is None:
            notes.append(note)
            continue
        sources = [
            ipaddress.ip_network(r["CidrIp"], strict=False) for r in permission.get("IpRanges", [])
        ]
        sources += [
            ipaddress.ip_network(r["CidrIpv6"], strict=False)
            for r in permission.get("Ipv6Ranges", [])
        ]
        for pair in permission.get("UserIdGroupPairs", []):
            if group_id is not None and pair.get("GroupId") == group_id:
                sources += [ipaddress.ip_network(ip) for ip in member_ips]
            else:
                notes.append(
                    f"a rule from another group ({_word(pair.get('GroupId'))}) admits nothing "
                    "here: no machine of that group takes part."
                )
        for entry in permission.get("PrefixListIds", []):
            notes.append(
                f"a rule from prefix list {_word(entry.get('PrefixListId'))} admits nothing here: "
                "its addresses are not known."
            )
        for version in (4, 6):
            networks = [n for n in sources if n.version == version]
            if not networks:
                continue
            if family is not None and family != version:
                notes.append(
                    f"an {_PROTOCOL_NAME[family]} rule from IPv{version} sources admits nothing "
                    f"(AWS applies it to IPv{family} only)."
                )
                continue
            saddr = "ip saddr" if version == 4 else "ip6 saddr"
            statements.append(" ".join(p for p in (saddr, _set(networks), match, "accept") if p))
    text = "\n".join(
        [
            f"table inet {TABLE} {{}}",
            f"delete table inet {TABLE}",
            f"table inet {TABLE} {{",
            "  chain input {",
            "    type filter hook input priority 0;",
            "    policy drop;",
            "    ct state established,related accept",
            "    iif lo accept",
            f"    icmpv6 type {{ {_NEIGHBOUR_DISCOVERY} }} accept",
            *(f"    {s}" for s in statements),
            "  }",
            "}",
            "",
        ]
    )
    return Ruleset(text, tuple(dict.fromkeys(notes)))


def _protocol_match(permission: dict) -> tuple[str | None, int | None, str]:
    """One permission's protocol and ports as an nft match (``""``: everything), the only address
    family it applies to (ICMP), or None and the note saying why it admits nothing."""
    protocol = str(permission.get("IpProtocol", "")).lower()
    if protocol == "-1":
        return "", None, ""
    low, high = permission.get("FromPort"), permission.get("ToPort")
    if protocol in _TCP_UDP:
        if not (_number(low, 0, 65535) and _number(high, low, 65535)):
            note = f"a {protocol} rule with ports {_word(low)}-{_word(high)} admits nothing here."
            return None, None, note
        ports = str(low) if low == high else f"{low}-{high}"
        return f"{_TCP_UDP[protocol]} dport {ports}", None, ""
    if protocol in _ICMP:
        name = _ICMP[protocol]
        if low is None or low == -1:
            return f"meta l4proto {name}", _ICMP_FAMILY[name], ""
        if not (_number(low, 0, 255) and (high == -1 or _number(high, 0, 255))):
            note = f"an {name} rule with type {_word(low)} code {_word(high)} admits nothing here."
            return None, None, note
        code = "" if high == -1 else f" {name} code {high}"
        return f"{name} type {low}{code}", _ICMP_FAMILY[name], ""
    if protocol.isdigit() and int(protocol) <= 255:
        return f"meta l4proto {int(protocol)}", None, ""
    return None, None, f"a rule for protocol {_word(protocol)} admits nothing here."


def _number(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _set(networks: list) -> str:
    """One network, or an nft anonymous set of several (nft merges overlapping ones itself)."""
    unique = sorted(set(ipaddress.collapse_addresses(networks)))
    texts = [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in unique]
    return texts[0] if len(texts) == 1 else "{ " + ", ".join(texts) + " }"


def _word(value) -> str:
    """A value from outside, shortened and quoted, for a note (never for the ruleset)."""
    text = repr(str(value))
    return text if len(text) <= 40 else text[:37] + "...'"
