"""Team guardrails: limits every plan of every member checks before anything is written.

A team lead sets restrictive defaults; the next person adds ``8786 everyone`` to debug and forgets it.
A guardrail is a limit kept with the account defaults (the account store) that every plan and apply
checks on the rules as they will be sent (``me`` resolved, compacted, so that a merge of networks
cannot slip past it):

* ``no-world PORTS``: these ports are never open to the world (``0.0.0.0/0`` or ``::/0``);
* ``within NETWORKS``: every network source lies inside one of these networks (a security group
  source is not an address and is not limited by it);
* ``widest IPV4 [IPV6]``: no network wider than ``/IPV4`` (and ``/IPV6``, default 48);
* ``max-rules K``: at most K rules.

A plan that breaks one is refused in one sentence naming the guardrail, who set it and when, unless
the person overrides that guardrail by name with a reason.

Pure: parsing, the stored form and the check; the account store keeps them and the plan checks them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .rules import EVERYONE_NETWORKS, IngressError, Rule, canonical_network, parse_ports
from .strict_yaml import excerpt

NAMES = ("no-world", "within", "widest", "max-rules")
DEFAULT_WIDEST_IPV6 = 48
REASON_MAX = 200
_STORED_KEYS = {"name", "value", "set_by", "set_at"}


@dataclass(frozen=True)
class Guardrail:
    """One limit: its ``name`` (one of :data:`NAMES`), its ``value`` as canonical words (ports,
    networks or numbers, as a person writes them), and who set it and when."""

    name: str
    value: tuple[str, ...]
    set_by: str = ""
    set_at: str = ""

    def describe(self) -> str:
        if self.name == "no-world":
            many = len(self.value) > 1 or "-" in self.value[0]
            return f"port{'s' if many else ''} {', '.join(self.value)} never open to the world"
        if self.name == "within":
            return f"sources only within {', '.join(self.value)}"
        if self.name == "widest":
            return f"no network wider than /{self.value[0]} (IPv4) or /{self.value[1]} (IPv6)"
        return f"at most {self.value[0]} rules"

    def broken_by(self, rules: list[Rule]) -> list[Rule]:
        """The rules that break this guardrail (for ``max-rules``: those past the limit)."""
        if self.name == "max-rules":
            return rules[int(self.value[0]) :]
        return [rule for rule in rules if self._breaks(rule)]

    def _breaks(self, rule: Rule) -> bool:
        network = rule.network
        if network is None:
            return False
        if self.name == "no-world":
            return rule.source in EVERYONE_NETWORKS and any(
                low <= rule.to_port and rule.from_port <= high
                for low, high in parse_ports(list(self.value))
            )
        if self.name == "within":
            return not any(
                network.version == limit.version and network.subnet_of(limit)
                for limit in map(ipaddress.ip_network, self.value)
            )
        widest = int(self.value[0] if network.version == 4 else self.value[1])
        return network.prefixlen < widest

    def to_stored(self) -> dict:
        return {
            "name": self.name,
            "value": list(self.value),
            "set_by": self.set_by,
            "set_at": self.set_at,
        }


def parse_guardrail(name, value, *, set_by: str = "", set_at: str = "") -> Guardrail:
    """A guardrail as a person wrote it (``"no-world", "8786,8787"``), validated; one sentence per
    mistake, all in one :class:`~coiled_jupyter.rules.IngressError`."""
    word = name.strip().lower() if isinstance(name, str) else name
    if word not in NAMES:
        raise IngressError(
            [f"there is no guardrail {excerpt(name)}; the guardrails are {', '.join(NAMES)}."]
        )
    where = f"guardrail {word}"
    items = _items(value)
    if word == "no-world":
        ports = parse_ports(items, where=where)
        words = [str(low) if low == high else f"{low}-{high}" for low, high in ports]
        return Guardrail(word, tuple(words), set_by, set_at)
    if word == "within":
        if not items:
            raise IngressError([f"{where} needs at least one network, e.g. 10.0.0.0/8."])
        networks = [canonical_network(str(item), where=where) for item in items]
        return Guardrail(word, tuple(dict.fromkeys(networks)), set_by, set_at)
    if word == "widest":
        if not 1 <= len(items) <= 2:
            raise IngressError(
                [f"{where} takes a prefix length for IPv4 and optionally IPv6, e.g. 16 48."]
            )
        ipv4 = _number(items[0], 0, 32, where)
        ipv6 = _number(items[1], 0, 128, where) if len(items) > 1 else DEFAULT_WIDEST_IPV6
        return Guardrail(word, (str(ipv4), str(ipv6)), set_by, set_at)
    if len(items) != 1:
        raise IngressError([f"{where} takes one number, the most rules a cluster may have."])
    return Guardrail(word, (str(_number(items[0], 1, 1000, where)),), set_by, set_at)


def _items(value) -> list:
    """A value as its items: ``"8786,8787"``, ``"16 48"``, ``["8786,8787"]`` and ``["/16"]``
    alike."""
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if isinstance(value, (list, tuple)):
        return [
            part
            for item in value
            for part in (item.replace(",", " ").split() if isinstance(item, str) else [item])
        ]
    return [value]


def _number(value, low: int, high: int, where: str) -> int:
    text = value.strip().removeprefix("/") if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif text is not None and text.isascii() and text.isdigit() and len(text) <= 4:
        number = int(text)
    else:
        raise IngressError([f"{where} takes whole numbers, not {excerpt(value)}."])
    if not low <= number <= high:
        raise IngressError([f"{where} takes a number from {low} to {high}, not {number}."])
    return number


@dataclass(frozen=True)
class Breach:
    """A guardrail the rules break, the rules that break it, and the override's reason if any."""

    guardrail: Guardrail
    rules: tuple[Rule, ...]
    reason: str | None = None

    def sentence(self) -> str:
        rail = self.guardrail
        who = f", set by {rail.set_by}" if rail.set_by else ""
        when = f" at {rail.set_at}" if rail.set_at else ""
        shown = "; ".join(str(rule) for rule in self.rules[:3])
        more = f" and {len(self.rules) - 3} more" if len(self.rules) > 3 else ""
        if self.reason is not None:
            return (
                f"guardrail {rail.name} ({rail.describe()}{who}{when}) overridden for {shown}"
                f"{more}: {self.reason}"
            )
        return (
            f"the rules break the team's guardrail {rail.name} ({rail.describe()}{who}{when}): "
            f"{shown}{more}; change those rules, or override it with --override-guardrail "
            f"{rail.name} --reason TEXT."
        )


@dataclass(frozen=True)
class Guardrails:
    """The team's guardrails, at most one per name."""

    rails: tuple[Guardrail, ...] = ()

    def check(
        self, rules: Iterable[Rule], overrides: Mapping[str, str] | None = None
    ) -> tuple[list[Breach], list[Breach]]:
        """``(refused, overridden)``: the breaches not overridden, and those overridden with their
        reason. An override that overrides nothing is refused, so that a typo in one never goes
        unnoticed and no override is kept "just in case"."""
        rules = list(rules)
        overrides = dict(overrides or {})
        _check_overrides(overrides)
        refused, overridden = [], []
        for rail in self.rails:
            broken = rail.broken_by(rules)
            if broken:
                reason = overrides.get(rail.name)
                breach = Breach(rail, tuple(broken), reason)
                (overridden if reason is not None else refused).append(breach)
        needless = sorted(set(overrides) - {b.guardrail.name for b in overridden})
        if needless:
            raise IngressError(
                [
                    f"--override-guardrail {name} overrides nothing: the rules do not break it "
                    "(or the team has no such guardrail); leave it out."
                    for name in needless
                ]
            )
        return refused, overridden

    def signed(self, before: Guardrails, by: str, at: str) -> Guardrails:
        """These guardrails, each that is new or changed since ``before`` signed ``by`` at ``at``;
        the others keep who set them and when."""
        earlier = {rail.name: rail for rail in before.rails}
        return Guardrails(
            tuple(
                earlier[rail.name]
                if rail.name in earlier and earlier[rail.name].value == rail.value
                else replace(rail, set_by=by, set_at=at)
                for rail in self.rails
            )
        )

    def replaced(self, rail: Guardrail) -> Guardrails:
        return Guardrails(tuple(r for r in self.rails if r.name != rail.name) + (rail,))

    def without(self, name: str) -> Guardrails:
        return Guardrails(tuple(r for r in self.rails if r.name != name))

    def to_stored(self) -> list[dict]:
        return [rail.to_stored() for rail in sorted(self.rails, key=lambda r: NAMES.index(r.name))]

    @classmethod
    def from_stored(cls, stored, *, where: str) -> Guardrails:
        """What the store holds, validated as strictly as what a person types: a store someone
        edited by hand is refused in one sentence, never read as "no guardrails"."""
        if stored is None:
            return cls()
        if not isinstance(stored, list):
            raise IngressError(
                [f"{where} holds guardrails that are not a list; fix or clear them."]
            )
        rails: dict[str, Guardrail] = {}
        for item in stored:
            if not isinstance(item, dict) or set(item) - _STORED_KEYS or item.get("name") in rails:
                raise IngressError(
                    [f"{where} holds a guardrail {excerpt(item)} this tool cannot read."]
                )
            rail = parse_guardrail(
                item.get("name"),
                item.get("value"),
                set_by=str(item.get("set_by", "")),
                set_at=str(item.get("set_at", "")),
            )
            rails[rail.name] = rail
        return cls(tuple(rails.values()))


def _check_overrides(overrides: Mapping[str, str]) -> None:
    problems = []
    for name, reason in overrides.items():
        if name not in NAMES:
            problems.append(
                f"there is no guardrail {excerpt(name)} to override; the guardrails are "
                f"{', '.join(NAMES)}."
            )
        elif not isinstance(reason, str) or not reason.strip():
            problems.append(f"--override-guardrail {name} needs --reason TEXT saying why.")
        elif len(reason) > REASON_MAX:
            problems.append(
                f"the reason for overriding {name} is longer than {REASON_MAX} characters."
            )
    if problems:
        raise IngressError(problems)
