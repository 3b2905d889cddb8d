"""Coiled's network keywords, both ways: ``allow_ingress_from`` and friends into rules, and rules back
into those keywords when they can be said that way.

Coiled's users write ``coiled.Cluster(allow_ingress_from="me", allow_ssh_from=..., allow_ssh=True,
allow_spark=..., open_extra_ports=[...], scheduler_port=...)``; ``coiled.Cluster.__init__``
(coiled/v2/cluster.py) turns them into an ingress list with ``coiled.utils.cluster_firewall``. This
module mirrors both, line for line, as read from the ``coiled`` wheel named in
:data:`coiled_jupyter.ports.COILED_VERSION` (tests compare it with the installed functions), without
importing ``coiled`` and without its network lookups: ``me`` stays this tool's symbolic ``me`` (looked
up when the rules are sent) and ``everyone`` this tool's ``everyone``.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass, fields

from .ports import COILED_SCHEDULER, JUPYTER, SPARK, SSH, parse_port
from .rules import (
    EVERYONE,
    EVERYONE_NETWORKS,
    MAX_LISTED_PORTS,
    ME,
    IngressError,
    Rule,
    parse_ingress,
)
from .strict_yaml import excerpt

KEYWORDS = (
    "allow_ingress_from",
    "allow_ssh_from",
    "allow_ssh",
    "allow_spark",
    "open_extra_ports",
    "scheduler_port",
)
# Beside the keywords, the one other setting a keyword form may carry.
_ALSO = ("use_scheduler_public_ip",)


@dataclass(frozen=True)
class NetworkArgs:
    """Coiled's network keywords as a person gave them (None: not given, as in Coiled)."""

    allow_ingress_from: str | None = None
    allow_ssh_from: str | None = None
    allow_ssh: bool | None = None
    allow_spark: bool | None = None
    open_extra_ports: tuple[int, ...] | None = None
    scheduler_port: int | None = None

    def kwargs(self) -> dict:
        """The keywords to pass to ``coiled.Cluster`` as they are (given ones only)."""
        found = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None:
                found[item.name] = list(value) if item.name == "open_extra_ports" else value
        return found

    def ingress(self, *, use_dashboard_https: bool = True) -> list[dict]:
        """The ingress list ``coiled.Cluster`` builds from these keywords (duplicates and all).

        ``coiled.Cluster.__init__``: target ``allow_ingress_from or "everyone"``, ``ssh`` from
        ``allow_ssh``, ``ssh_target`` from ``allow_ssh_from``, Spark on when the HTTPS dashboard is
        and ``allow_spark`` is not given, the scheduler port when given; then ``cluster_firewall``
        with its own defaults (``https=True``, no dashboard port, no Jupyter).
        """
        spark = True if use_dashboard_https and self.allow_spark is None else bool(self.allow_spark)
        return cluster_firewall(
            self.allow_ingress_from or EVERYONE,
            scheduler=self.scheduler_port or COILED_SCHEDULER,
            ssh=bool(self.allow_ssh),
            ssh_target=self.allow_ssh_from,
            spark=spark,
            extra_ports=list(self.open_extra_ports) if self.open_extra_ports else None,
        )["ingress"]

    def rules(self, *, use_dashboard_https: bool = True) -> list[Rule]:
        return parse_ingress(
            self.ingress(use_dashboard_https=use_dashboard_https), where="the keyword form"
        )


def cluster_firewall(
    target: str,
    *,
    scheduler: int = COILED_SCHEDULER,
    dashboard: int | None = None,
    jupyter: bool = False,
    ssh: bool = False,
    ssh_target: str | None = None,
    spark: bool = False,
    http: bool = False,
    https: bool = True,
    extra_ports: list[int] | None = None,
) -> dict:
    """``coiled.utils.cluster_firewall``, line for line, except that ``me`` and ``everyone`` stay
    symbolic (Coiled looks ``me`` up at once and writes ``everyone`` as 0.0.0.0/0)."""
    target_cidr, ssh_cidr = target, ssh_target
    ports = [scheduler]
    if dashboard:
        ports.append(dashboard)
    elif not https:
        ports.append(8787)
    if ssh and (not ssh_cidr or target_cidr == ssh_cidr):
        ports.append(SSH)
    if spark:
        ports.append(SPARK)
    if jupyter:
        ports.append(JUPYTER)
    if http:
        ports.append(80)
    if https:
        ports.append(443)
    if extra_ports:
        ports.extend(extra_ports)
    ingress_rules = [{"ports": ports, "cidr": target_cidr}]
    if ssh_cidr and SSH not in ports:
        ingress_rules.append({"ports": [SSH], "cidr": ssh_cidr})
    return {"ingress": ingress_rules}


# --------------------------------------------------------------------------------------------------
# Reading the keyword form


def is_keyword_form(value) -> bool:
    """A mapping with one of Coiled's network keywords, or ``key=value`` text naming one."""
    if isinstance(value, str):
        return _looks_like_pairs(value)
    return isinstance(value, dict) and any(_name(k) in KEYWORDS for k in value)


def _looks_like_pairs(text: str) -> bool:
    """``name=...`` first: no rule list or YAML mapping starts so, and a mistyped keyword must still
    be read as one, to be told which keyword it resembles."""
    return re.match(r"\s*[A-Za-z_][A-Za-z0-9_-]*=", text) is not None


def _name(key) -> str:
    return str(key).strip().replace("-", "_")


def parse(value, *, where: str = "the keyword form") -> tuple[NetworkArgs, bool | None]:
    """Coiled's keywords from a mapping (YAML, JSON, Python) or ``key=value`` text, checked before
    use; returns them and ``use_scheduler_public_ip`` (None when not given). Every problem of one
    input is reported together."""
    from .settings import parse_public_ip

    data = _pairs(value, where) if isinstance(value, str) else dict(value)
    problems: list[str] = []
    given: dict = {}
    public_ip = None
    for key, raw in data.items():
        name = _name(key)
        if name not in (*KEYWORDS, *_ALSO):
            close = difflib.get_close_matches(name, [*KEYWORDS, *_ALSO], n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"use {', '.join(KEYWORDS)}."
            problems.append(f"{where} has unknown key {excerpt(key)}; {hint}")
            continue
        if name in given or (name == "use_scheduler_public_ip" and public_ip is not None):
            problems.append(f"{where} gives {name} twice; keep one.")
            continue
        try:
            if name == "use_scheduler_public_ip":
                public_ip = parse_public_ip(raw, where=f"use_scheduler_public_ip in {where}")
            elif raw is not None:
                given[name] = _value(name, raw, f"{name} in {where}")
        except IngressError as error:
            problems += error.problems
    if not problems and not given:
        problems.append(
            f"{where} gives none of Coiled's network keywords; write e.g. allow_ingress_from: me."
        )
    if problems:
        raise IngressError(problems)
    return NetworkArgs(**given), public_ip


def _pairs(text: str, where: str) -> dict:
    """``allow_ingress_from=me allow_ssh=true open_extra_ports=8786,8787`` into a mapping; each value
    is read as YAML (``true``, ``[22, 8786]``), by the one strict reader."""
    from .rules import load_text

    try:
        words = shlex.split(text)
    except ValueError as error:
        raise IngressError([f"{where} cannot be split into key=value words ({error})."]) from None
    data: dict = {}
    for word in words:
        key, sep, raw = word.partition("=")
        if not sep or not key:
            raise IngressError(
                [f"{where} has {excerpt(word)}, which is not key=value; write e.g. allow_ssh=true."]
            )
        if key in data:
            raise IngressError([f"{where} gives {key} twice; keep one."])
        data[key] = load_text(raw, f"{key} in {where}") if raw.strip() else None
    return data


def _value(name: str, raw, where: str):
    if name in ("allow_ingress_from", "allow_ssh_from"):
        return _source(raw, where)
    if name in ("allow_ssh", "allow_spark"):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise IngressError([f"{where} is {excerpt(raw)}; write true or false."])
    if name == "scheduler_port":
        return parse_port(raw, where=where)
    ports = raw.split(",") if isinstance(raw, str) else raw
    if isinstance(ports, int) and not isinstance(ports, bool):
        ports = [ports]
    if not isinstance(ports, (list, tuple)) or not ports:
        raise IngressError([f"{where} is {excerpt(raw)}; write a list of ports like [8786, 8787]."])
    if len(ports) > MAX_LISTED_PORTS:
        raise IngressError(
            [f"{where} lists {len(ports):,} ports; write at most {MAX_LISTED_PORTS}."]
        )
    return tuple(parse_port(p, where=f"{where} (item {i + 1})") for i, p in enumerate(ports))


def _source(raw, where: str) -> str:
    """``me``, ``everyone`` or one IPv4 network, checked as a rule's source is (host bits refused).
    Coiled writes the target as ``cidr`` of one rule, so it is one network, never a list."""
    if not isinstance(raw, str) or not raw.strip():
        raise IngressError(
            [f"{where} is {excerpt(raw)}; write me, everyone or a network like 10.1.0.0/16."]
        )
    text = raw.strip()
    if text.lower() in (ME, EVERYONE):
        return text.lower()
    rules = parse_ingress([{"ports": [COILED_SCHEDULER], "cidr": text}], where=where)
    if rules[0].source_kind == "group":
        raise IngressError(
            [f"{where} is {excerpt(raw)}; Coiled takes a network here, not a group."]
        )
    return rules[0].source


# --------------------------------------------------------------------------------------------------
# Rules back into keywords


def from_rules(
    rules: list[Rule], *, scheduler: int, use_dashboard_https: bool
) -> NetworkArgs | None:
    """The keywords ``coiled.Cluster`` turns into exactly ``rules`` (as sets of rules), or None when
    they cannot be said that way (udp, groups, descriptions aside, more than two sources, ...).

    ``scheduler`` is the port the cluster's scheduler listens on; every guess is checked by building
    its rules again, so a None here is never a wrong keyword set."""
    if not rules or any(r.protocol != "tcp" or r.source_kind == "group" for r in rules):
        return None
    by_source: dict[str, set[int]] = {}
    for rule in rules:
        if rule.to_port - rule.from_port >= MAX_LISTED_PORTS:
            return None
        by_source.setdefault(_keyword_source(rule.source), set()).update(
            range(rule.from_port, rule.to_port + 1)
        )
    if None in by_source or not _ipv6_inside_ipv4(rules):
        return None
    main = [s for s, ports in by_source.items() if not (ports == {SSH} and len(by_source) == 2)]
    if len(main) != 1 or len(by_source) > 2:
        return None
    target = main[0]
    ports = by_source[target]
    ssh_from = next((s for s in by_source if s != target), None)
    if not {scheduler, 443} <= ports:
        return None
    ssh = SSH in ports and ssh_from is None
    spark = SPARK in ports
    extra = sorted(
        ports - {scheduler, 443} - ({SSH} if ssh else set()) - ({SPARK} if spark else set())
    )
    found = NetworkArgs(
        allow_ingress_from=target,
        allow_ssh_from=ssh_from,
        allow_ssh=True if ssh else None,
        allow_spark=None if spark == use_dashboard_https else spark,
        open_extra_ports=tuple(extra) if extra else None,
        scheduler_port=None if scheduler == COILED_SCHEDULER else scheduler,
    )
    built = _admitted(found.rules(use_dashboard_https=use_dashboard_https))
    return found if built == _admitted(rules) else None


def _keyword_source(source: str) -> str | None:
    """A rule's source as Coiled's keyword says it: ``me``, ``everyone`` (0.0.0.0/0, with or without
    ::/0: Coiled opens only the first), or an IPv4 network; None for anything else."""
    if source == ME:
        return ME
    if source in EVERYONE_NETWORKS:
        return EVERYONE
    return source if ":" not in source else None


def _admitted(rules: list[Rule]) -> set[tuple[int, str]]:
    """Every (port, source) the rules admit, our ``everyone`` (two networks) folded into one."""
    return {
        (port, EVERYONE if rule.source in EVERYONE_NETWORKS else rule.source)
        for rule in rules
        for port in range(rule.from_port, rule.to_port + 1)
    }


def _ipv6_inside_ipv4(rules: list[Rule]) -> bool:
    """Coiled's ``everyone`` opens 0.0.0.0/0 only: a port open to ::/0 alone cannot be said so."""
    ipv4 = {
        p
        for r in rules
        if r.source == EVERYONE_NETWORKS[0]
        for p in range(r.from_port, r.to_port + 1)
    }
    ipv6 = {
        p
        for r in rules
        if r.source == EVERYONE_NETWORKS[1]
        for p in range(r.from_port, r.to_port + 1)
    }
    return ipv6 <= ipv4
