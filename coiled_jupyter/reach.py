"""Reachability: can this notebook reach the scheduler and the dashboard through the rules?

The most common complaint about cluster firewalls is a client that times out connecting to a scheduler
it can no longer reach. Whether it can depends on which address of the notebook the traffic comes from:

* ``use_scheduler_public_ip`` true: the client dials the scheduler's public IP, so the traffic leaves
  through the notebook's NAT or internet gateway and arrives from the notebook's **public** address;
* false: the client dials the scheduler's private IP inside the VPC (or over a VPN), so the traffic
  arrives from one of the notebook's **private** addresses, those of its network interfaces.

:func:`check` compares that address with the rules and gives, per port, a verdict ``yes``, ``no`` or
``unknown`` (the address that matters is unknown, e.g. offline), plus warnings for the classic mistakes,
each naming the values and a fix. It writes no HTML: ``display`` renders the :class:`Reachability`.

Nothing here may hang a notebook: the public address is asked of small web services with a short
deadline, and any failure means "unknown".
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import settings
from .ports import PortModel
from .rules import (
    EVERYONE_NETWORKS,
    ME,
    IngressError,
    Rule,
    admits,
    open_to_everyone,
    resolve_me,
)

YES, NO, UNKNOWN = "yes", "no", "unknown"
PUBLIC_IP_CONFIG_KEY = "coiled.client_public_ip"
# Address space that is only reachable inside a VPC, over a VPN or peering: RFC 1918, carrier-grade
# NAT (also used by some VPNs such as Tailscale) and IPv6 unique local addresses.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
# Dask speaks TCP on both ports.
_PROTOCOL = "tcp"
# A service's answer is one address; anything longer is an error page, not an answer.
_MAX_ANSWER_BYTES = 256

# This process's public addresses once a service has told them, for a short while (see
# :func:`public_addresses`).
_public: PublicAddress | None = None


# --------------------------------------------------------------------------------------------------
# This notebook's addresses


def local_addresses() -> list[str]:
    """This machine's addresses from its network interfaces, IPv4 first, without loopback and link-local.

    These are the addresses traffic to a scheduler's private IP comes from. Loopback never leaves the
    machine and link-local addresses do not cross a router, so neither can be admitted by a rule.
    """
    import psutil

    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            # IPv6 addresses may carry a zone (fe80::1%eth0); the zone is not part of the address.
            ip = ipaddress.ip_address(address.address.split("%", 1)[0])
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                found.add(ip)
    return [str(ip) for ip in sorted(found, key=lambda ip: (ip.version, int(ip)))]


@dataclass(frozen=True)
class PublicAddress:
    """This notebook's public addresses (IPv4 first), where they came from and when.

    ``source`` is the service URL(s) that answered, or the Dask config key that set them;
    ``looked_up_at`` is when (UTC); ``at`` the monotonic clock then, for the cache's age.
    """

    addresses: tuple[str, ...]
    source: str
    looked_up_at: datetime.datetime
    at: float

    @property
    def first(self) -> str:
        return self.addresses[0]

    def describe(self) -> str:
        """``203.0.113.7 and 2001:db8::7 (looked up at 01:23:45 UTC from https://...)``."""
        when = self.looked_up_at.strftime("%H:%M:%S UTC")
        verb = "read" if self.source == PUBLIC_IP_CONFIG_KEY else "looked up"
        return f"{_words(list(self.addresses))} ({verb} at {when} from {self.source})"

    def to_dict(self) -> dict:
        return {
            "addresses": list(self.addresses),
            "source": self.source,
            "looked_up_at": self.looked_up_at.isoformat(timespec="seconds"),
        }


def public_addresses(
    *,
    services: Sequence[str] | None = None,
    services_ipv6: Sequence[str] | None = None,
    timeout: float | None = None,
    max_age: float | None = None,
) -> PublicAddress | None:
    """This notebook's public addresses, or ``None`` when they cannot be known (offline, blocked).

    Dask's ``coiled.client_public_ip`` (Coiled's own key) wins, so a person behind an unusual NAT or
    without internet access can say it; it is read on every call so a change shows at once. Else an
    answer younger than ``max_age`` seconds (default: option ``public-ip.cache-seconds``) is reused,
    so that views and an apply right after them ask once; an older one is never used, since after a
    network change it would admit an address this notebook no longer has. Else the IPv4 services
    (``services``, default option ``public-ip.services``) and the IPv6 ones (``services_ipv6``,
    default option ``public-ip.services-ipv6``) are asked at the same time, each list in turn, each
    service given ``timeout`` seconds (default option ``public-ip.timeout``); the first answer of
    each list that is an IP address counts. A failure is not cached, so coming back online is
    noticed on the next call.

    The services are asked directly, never through an ``HTTP(S)_PROXY`` of the environment: the
    proxy's address is not the one Dask's traffic, which does not use the proxy, comes from.

    Raises :class:`~coiled_jupyter.rules.IngressError` (as settings does for a bad toggle) only for a
    ``coiled.client_public_ip`` that is not an IP address: a person typed it, so they are told rather
    than silently ignored.
    """
    global _public
    configured = _configured_public_address()
    if configured is not None:
        return PublicAddress((configured,), PUBLIC_IP_CONFIG_KEY, _utc_now(), time.monotonic())
    if max_age is None:
        max_age = float(settings.option("public-ip.cache-seconds"))
    if _public is not None and time.monotonic() - _public.at < max_age:
        return _public
    lists = [
        _service_list(services, "public-ip.services"),
        _service_list(services_ipv6, "public-ip.services-ipv6"),
    ]
    if timeout is None:
        timeout = float(settings.option("public-ip.timeout"))
    answers = _first_answers([urls for urls in lists if urls], timeout)
    if not answers:
        return None
    found = dict(sorted(answers.items(), key=lambda item: ipaddress.ip_address(item[0]).version))
    _public = PublicAddress(
        tuple(found), " and ".join(dict.fromkeys(found.values())), _utc_now(), time.monotonic()
    )
    return _public


def public_address(
    *, services: Sequence[str] | None = None, timeout: float | None = None
) -> str | None:
    """This notebook's public address (IPv4 when it has one), or ``None``; see :func:`public_addresses`."""
    found = public_addresses(services=services, timeout=timeout)
    return found.first if found is not None else None


def forget_public_address() -> None:
    """Drop the cached public address, so the next lookup asks the services again."""
    global _public
    _public = None


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _service_list(services: Sequence[str] | None, key: str) -> list[str]:
    if services is None:
        services = settings.option(key) or []
    if isinstance(services, str):
        # A single URL from a DASK_COILED_JUPYTER__PUBLIC_IP__SERVICES variable is a string, not a list.
        services = [services]
    return list(services)


def _first_answers(lists: list[list[str]], timeout: float) -> dict[str, str]:
    """Each list's first answer that is an IP address, as {address: url}; the lists run at once."""
    answers: list[tuple[str, str]] = []

    def ask_in_turn(urls: list[str]) -> None:
        for url in urls:
            answer = _ask(url, timeout)
            if answer is not None:
                answers.append((answer, url))
                return

    threads = [
        threading.Thread(target=ask_in_turn, args=(urls,), name="coiled-jupyter-public-ip")
        for urls in lists
    ]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread, urls in zip(threads, lists):
        thread.join(timeout * len(urls) + 0.5)  # _ask gives up at its deadline; this is a backstop
    return dict(answers)


def _configured_public_address() -> str | None:
    import dask.config

    value = dask.config.get(PUBLIC_IP_CONFIG_KEY, None)
    if value is None:
        return None
    address = _as_address(str(value))
    if address is None:
        raise IngressError(
            [
                f"{PUBLIC_IP_CONFIG_KEY} is {value!r}, which is not an IP address; set "
                "it to this notebook's public address, e.g. 203.0.113.7, or remove it to "
                "have it looked up."
            ]
        )
    return address


def _ask(url: str, timeout: float) -> str | None:
    """One service's answer within about ``timeout`` seconds, or ``None``.

    urllib's timeout bounds each socket operation, but not the name lookup (which can block for many
    seconds when offline) nor a server that trickles bytes. So the request runs in a daemon thread that
    is abandoned at the deadline; being a daemon, it never holds up the kernel's exit.
    """
    answers: list[str | None] = []
    thread = threading.Thread(
        target=lambda: answers.append(_fetch(url, timeout)),
        name="coiled-jupyter-public-ip",
        daemon=True,
    )
    thread.start()
    thread.join(timeout)
    return answers[0] if answers else None


def _fetch(url: str, timeout: float) -> str | None:
    import http.client

    try:
        with _direct_opener().open(url, timeout=timeout) as response:
            body = response.read(_MAX_ANSWER_BYTES + 1)
    except (OSError, ValueError, http.client.HTTPException):
        # URLError, HTTPError (4xx/5xx), refused, reset and timeouts are OSErrors; a malformed URL is a
        # ValueError; a server that answers something other than HTTP is an HTTPException.
        return None
    if len(body) > _MAX_ANSWER_BYTES:
        return None
    return _as_address(body.decode("utf-8", "replace"))


def _direct_opener():
    """A urllib opener that ignores ``HTTP(S)_PROXY``: the address seen through a proxy is the proxy's."""
    import urllib.request

    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _as_address(text: str) -> str | None:
    """``text`` as a canonical IP address if that is all it is (surrounding whitespace aside)."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# Verdicts


@dataclass(frozen=True)
class PortReach:
    """Can this notebook reach one port? ``verdict`` is ``yes``, ``no`` or ``unknown``.

    ``address`` is the notebook address the verdict is about (the admitted one for ``yes``), ``rule``
    the source of the rule that admits it (``me (203.0.113.7)`` for a ``me`` rule), and ``reason`` one
    sentence saying why.
    """

    name: str
    port: int
    verdict: str
    reason: str
    address: str | None = None
    rule: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "port": self.port,
            "verdict": self.verdict,
            "reason": self.reason,
            "address": self.address,
            "rule": self.rule,
        }


@dataclass(frozen=True)
class Reachability:
    """What the rules mean for this notebook: a verdict per port, its addresses, and warnings.

    ``public`` is ``None`` when the public address is unknown or was not needed (the private IP is
    used and no rule says ``me``), since it is only looked up when it matters. ``model`` is the
    kind of cluster and the ports the verdicts assumed; ``connect_warnings`` are the warnings that
    say a client will not connect (a plan repeats them before anything is applied).
    """

    use_scheduler_public_ip: bool
    local: tuple[str, ...]
    public: str | None
    scheduler: PortReach
    dashboard: PortReach
    warnings: tuple[str, ...] = ()
    lookup: PublicAddress | None = None  # how the public address was found, when it was
    # The fixes the warnings speak of, as (command, what it does): each one a line that works when
    # pasted into a cell for the cluster these rules are for (the view adds --cluster NAME).
    commands: tuple[tuple[str, str], ...] = ()
    model: PortModel | None = None
    connect_warnings: tuple[str, ...] = ()

    @property
    def ports(self) -> tuple[PortReach, PortReach]:
        return (self.scheduler, self.dashboard)

    def to_dict(self) -> dict:
        """A JSON-able form, e.g. for the JSON mimetype of the tables and the REST API."""
        return {
            "use_scheduler_public_ip": self.use_scheduler_public_ip,
            "local_addresses": list(self.local),
            "public_address": self.public,
            "scheduler": self.scheduler.to_dict(),
            "dashboard": self.dashboard.to_dict(),
            "warnings": list(self.warnings),
            "commands": [{"command": c, "does": d} for c, d in self.commands],
            "public_lookup": self.lookup.to_dict() if self.lookup is not None else None,
            "ports": self.model.to_dict() if self.model is not None else None,
        }


def check(
    rules: Iterable[Rule],
    use_scheduler_public_ip: bool,
    *,
    local: Iterable[str] | None = None,
    public: str | None = None,
    scheduler_port: int | None = None,
    dashboard_port: int | None = None,
    declared: bool = True,
    model: PortModel | None = None,
) -> Reachability:
    """Judge whether this notebook can reach the scheduler and dashboard ports through ``rules``.

    ``local`` defaults to :func:`local_addresses`. ``public`` defaults to :func:`public_addresses`, which
    is only called when the answer depends on it (the public IP is used, or a rule says ``me``), so
    that judging private-IP settings never waits on the network. The ports are those of ``model``
    (default: the default cluster's, :func:`coiled_jupyter.ports.model`); ``scheduler_port`` and
    ``dashboard_port`` override them. ``declared`` is False for the built-in default, which any
    declared rule replaces: its fix is to declare rules, not to remove the default's.
    """
    from .ports import model as port_model

    rules = list(rules)
    if model is None:
        model = port_model()
    if scheduler_port is None:
        scheduler_port = model.scheduler
    if dashboard_port is None:
        dashboard_port = model.dashboard
    local = tuple(
        local_addresses() if local is None else (str(ipaddress.ip_address(a)) for a in local)
    )
    lookup = None
    if public is None and (use_scheduler_public_ip or any(r.source == ME for r in rules)):
        lookup = public_addresses()
        public = lookup.first if lookup is not None else None
    elif public is not None:
        public = str(ipaddress.ip_address(public))

    if use_scheduler_public_ip:
        candidates = (public,) if public else ()
        kind = "this notebook's public address"
        unknown = f"{kind} is unknown (offline?); set {PUBLIC_IP_CONFIG_KEY} to tell it."
    else:
        candidates = local
        kind = "this notebook's private address"
        unknown = (
            "this notebook has no private address on its network interfaces (only loopback "
            "or link-local); connect on the public IP instead."
        )
    scheduler, dashboard = (
        _judge(name, port, rules, candidates, kind, unknown, public)
        for name, port in (("scheduler", scheduler_port), ("dashboard", dashboard_port))
    )

    advice: list[tuple[str, list[tuple[str, str]]]] = []
    locked_out = _lockout_advice(rules, model, scheduler_port)
    public_only = None if use_scheduler_public_ip else _public_only(rules, scheduler_port)
    if locked_out:
        advice.append(locked_out)
    elif public_only:
        advice.append(_private_ip_warning(public_only, scheduler_port, local))
    elif scheduler.verdict == NO:
        advice.append(
            _not_admitted_warning(rules, scheduler, use_scheduler_public_ip, local, public)
        )
    elif scheduler.verdict == UNKNOWN and not use_scheduler_public_ip and not local:
        advice.append(("", [("%coiled_scheduler_ip public", "connect on the public IP instead")]))
    connect = [text for text, _ in advice if text]
    opened = open_to_everyone(rules)
    if opened:
        advice.append(_open_warning(opened, scheduler_port, public, declared))
    return Reachability(
        use_scheduler_public_ip,
        local,
        public,
        scheduler,
        dashboard,
        tuple(text for text, _ in advice if text),
        lookup,
        tuple(dict.fromkeys(command for _, commands in advice for command in commands)),
        model,
        tuple(connect),
    )


def lockout(rules: Iterable[Rule], model: PortModel, port: int | None = None) -> str | None:
    """One sentence when no rule admits any source at all on the scheduler's port, else None.

    Declaring ingress replaces Coiled's default rules as a whole, and nothing adds the scheduler's
    port back: the seeds' ``[{ports: [8786, 8787], cidr: ...}]`` on a Coiled cluster listening on
    443 opens two ports nothing listens on, and every client times out.
    """
    found = _lockout_advice(list(rules), model, model.scheduler if port is None else port)
    return found[0] if found else None


def _lockout_advice(rules: list[Rule], model: PortModel, port: int) -> Advice | None:
    tcp = [r for r in rules if r.protocol in (_PROTOCOL, "all")]
    if any(r.from_port <= port <= r.to_port for r in tcp):
        return None
    opened = _merged_ports(tcp)
    these = f"these rules open {_words(opened)} only" if opened else "these rules open no port"
    where = "this Coiled cluster" if model.kind == "coiled" else "this Dask cluster"
    listens = model.listens if port == model.scheduler else f"listens on {port} (scheduler)"
    # The fix admits the rules' own one network, never the whole internet (then this notebook).
    sources = list(dict.fromkeys(r.source for r in tcp if r.network is not None))
    source = sources[0] if len(sources) == 1 and sources[0] not in EVERYONE_NETWORKS else ME
    fixes = [f"add {port}"]
    commands = [(f"%coiled_ingress add {port} {source}", f"open {port} to {source}")]
    if model.kind == "coiled" and any(r.from_port <= 8786 <= r.to_port for r in tcp):
        fixes.append("or set scheduler_port: 8786")
        commands.append(
            (
                f"%coiled_ingress set allow_ingress_from={source} scheduler_port=8786",
                "or have the scheduler listen on 8786 (Coiled's keywords)",
            )
        )
    if model.kind == "dask" and any(r.from_port <= 443 <= r.to_port for r in tcp):
        fixes.append("or, if it is a Coiled cluster, say so")
        commands.append(("%coiled_ingress --kind coiled", "or say it is a Coiled cluster"))
    return f"{where} {listens}; {these}, so no client will connect: {', '.join(fixes)}.", commands


def _judge(
    name: str,
    port: int,
    rules: list[Rule],
    candidates: Sequence[str],
    kind: str,
    unknown: str,
    public: str | None,
) -> PortReach:
    if not candidates:
        return PortReach(name, port, UNKNOWN, unknown)
    for address in candidates:
        rule = admitting_rule(rules, port, address, public)
        if rule is not None:
            source = f"me ({public})" if rule.source == ME else rule.source
            return PortReach(
                name, port, YES, f"{address} ({kind}) is admitted by {source}.", address, source
            )
    kinds = kind + ("es" if len(candidates) > 1 else "")
    return PortReach(
        name,
        port,
        NO,
        f"no rule admits {_words(candidates)} ({kinds}) on port {port}.",
        candidates[0],
    )


def admitting_rule(rules: list[Rule], port: int, address: str, public: str | None) -> Rule | None:
    """The first rule admitting ``address`` on ``port`` (TCP); ``me`` stands for the public address.

    The one judgement every verdict uses, also the rehearsal's prediction for each source."""
    for rule in rules:
        if admits(resolve_me([rule], [public] if public else []), _PROTOCOL, port, address):
            return rule
    return None


def _public_only(rules: list[Rule], port: int) -> list[str]:
    """The networks admitted on ``port`` when none of them overlaps private space, else ``[]``."""
    networks = [
        r.network
        for r in rules
        if r.protocol == _PROTOCOL and r.from_port <= port <= r.to_port and r.network
    ]
    if any(
        net.overlaps(private)
        for net in networks
        for private in PRIVATE_NETWORKS
        if net.version == private.version
    ):
        return []
    return list(dict.fromkeys(str(net) for net in networks))


Advice = tuple[str, list[tuple[str, str]]]  # a warning and the commands that fix it


def _private_ip_warning(networks: list[str], port: int, local: Sequence[str]) -> Advice:
    own = next((a for a in local if _is_private(a) and ipaddress.ip_address(a).version == 4), None)
    commands = []
    if own:
        network = str(ipaddress.ip_network(f"{own}/16", strict=False))
        commands.append(
            (f"%coiled_ingress add {port} {network}", f"admit this notebook's network ({own})")
        )
    commands.append(("%coiled_scheduler_ip public", "connect on the public IP instead"))
    return (
        f"the client will connect on the scheduler's private IP, but the rules only admit public "
        f"networks ({', '.join(networks)}) on port {port}; add your VPC or VPN range, or connect "
        "on the public IP.",
        commands,
    )


def _not_admitted_warning(
    rules: list[Rule],
    scheduler: PortReach,
    use_public: bool,
    local: Sequence[str],
    public: str | None,
) -> Advice:
    port, address = scheduler.port, scheduler.address
    if use_public:
        text = (
            f"this notebook's public address {address} is not admitted on port {port}, so the "
            "client will time out connecting to the scheduler; admit it"
        )
        commands = [(f"%coiled_ingress add {port} me", f"admit this notebook ({address})")]
        admitted_local = next((a for a in local if admitting_rule(rules, port, a, public)), None)
        if admitted_local:
            text += (
                f", or, if this notebook is in the cluster's network, connect on the private IP "
                f"({admitted_local} is admitted)"
            )
            commands.append(("%coiled_scheduler_ip private", "connect on the private IP"))
        return text + ".", commands
    addresses = "address" if len(local) == 1 else "addresses"
    verb = "is" if len(local) == 1 else "are"
    return (
        f"this notebook's private {addresses} {_words(local)} {verb} not admitted on port {port}, "
        "so the client will time out connecting to the scheduler; add your VPC range, or this "
        "notebook alone.",
        [(f"%coiled_ingress add {port} {address}", f"admit this notebook alone ({address})")],
    )


def _open_warning(
    opened: list[Rule], scheduler_port: int, public: str | None, declared: bool
) -> Advice:
    ports = list(
        dict.fromkeys(
            r.ports + ("" if r.protocol == _PROTOCOL else f"/{r.protocol}") for r in opened
        )
    )
    networks = _words(list(dict.fromkeys(r.source for r in opened)))
    me = (
        f"this notebook's public address ({public})" if public else "this notebook's public address"
    )
    text = (
        f"{'port' if len(ports) == 1 else 'ports'} {_words(ports)} "
        f"{'is' if len(ports) == 1 else 'are'} open to the whole internet ({networks}); restrict "
        f"them to a CIDR such as your office or VPC range, or to {me}."
    )
    spans = ",".join(dict.fromkeys(r.ports for r in opened if r.protocol == _PROTOCOL))
    spans = spans or str(scheduler_port)
    commands = [(f"%coiled_ingress add {spans} me", f"admit {me} on {spans}")]
    if not declared:
        # Declaring a rule replaces the built-in default as a whole: nothing is left to remove.
        return text, [(commands[0][0], commands[0][1] + " instead of everyone")]
    by_source: dict[tuple[str, str], list[str]] = {}
    for rule in opened:
        by_source.setdefault((rule.source, rule.protocol), []).append(rule.ports)
    for (source, protocol), spans_of_source in by_source.items():
        option = "" if protocol == _PROTOCOL else f" --protocol {protocol}"
        listed = ",".join(dict.fromkeys(spans_of_source))
        commands.append(
            (
                f"%coiled_ingress remove {listed} {source}{option}",
                f"then stop admitting {source} on {listed}",
            )
        )
    return text, commands


def _merged_ports(rules: list[Rule]) -> list[str]:
    """The ports the rules open, whatever the source, as AWS holds them: ``8786-8787``, ``22``."""
    merged: list[list[int]] = []
    for rule in sorted(rules, key=lambda r: (r.from_port, r.to_port)):
        if merged and rule.from_port <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], rule.to_port)
        else:
            merged.append([rule.from_port, rule.to_port])
    return [str(a) if a == b else f"{a}-{b}" for a, b in merged]


def _is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in PRIVATE_NETWORKS if net.version == ip.version)


def _words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
