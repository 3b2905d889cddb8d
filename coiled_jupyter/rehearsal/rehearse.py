"""Rehearse a group: its rules enforced with packets, each predicted verdict set beside a measured one.

:func:`rehearse` takes the group as the sandbox (or the cloud) holds it, picks the sources that matter
(this notebook's addresses, a sample inside each network of the rules, one outside every rule for the
world, a machine of the cluster when the group admits itself), predicts each with
:func:`coiled_jupyter.reach.admitting_rule` and measures each in the namespaces of
:mod:`.namespaces`: a real ``distributed.Client`` to the scheduler port and an HTTP GET of the
dashboard. The namespaces and the scheduler are built once per process and reused; they go when asked
(:func:`stop`), after ``coiled-jupyter.rehearsal.idle-seconds`` without use, and at exit.

:func:`live` is the one probe that is legitimate from a notebook against a real cluster: a TCP connect
to the scheduler's and dashboard's real address, compared with the prediction.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ipaddress
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ..reach import NO, YES, admitting_rule
from ..rules import Rule
from .namespaces import SCHEDULER_ADDRESSES, Measured, Rehearsal, tcp_connect
from .nft import ruleset
from .result import RehearsalResult, Row

# Another machine of the cluster (a worker), standing for the group's own members.
PEER_ADDRESSES = ("172.31.0.11", "fd63:6a72::11")
MEMBERS = (*SCHEDULER_ADDRESSES, *PEER_ADDRESSES)
# Documentation and unused ranges tried, in order, for "the world": the first outside every rule.
_WORLD = {
    4: ("198.51.100.7", "203.0.113.7", "192.0.2.7", "11.0.0.7", "100.64.0.7"),
    6: ("2001:db8:ffff::7", "3fff::7", "2001:db8::7", "fd00:ffff::7"),
}
MAX_SOURCES = 24
CLIENT_TIMEOUT = 3.0
HTTP_TIMEOUT = 2.0
LIVE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Source:
    """A place traffic comes from, and the address standing for it."""

    label: str
    address: str


# --------------------------------------------------------------------------------------------------
# Sources and predictions


def sources(
    rules: Sequence[Rule],
    *,
    group_id: str | None = None,
    local: Iterable[str] = (),
    public: str | None = None,
) -> tuple[list[Source], list[str]]:
    """The sources that matter for ``rules``, each with its own address, and notes on those left out."""
    found: list[Source] = []
    notes: list[str] = []
    for address in local:
        found.append(Source("this notebook (private)", address))
    if public:
        found.append(Source("this notebook (public)", public))
    networks = list(dict.fromkeys(r.network for r in rules if r.network is not None))
    for network in networks:
        if network.prefixlen == 0:
            continue  # the world's sample below stands inside it
        sample = _sample(network)
        if sample is None:
            notes.append(f"{network} holds only the rehearsal's own machines; not rehearsed.")
        else:
            found.append(Source(f"inside {network}", sample))
    versions = sorted({4} | {n.version for n in networks})
    for version in versions:
        outside = [a for a in _WORLD[version] if not any(_inside(a, n) for n in networks)]
        found.append(
            Source(
                "the world" if outside else "the world (admitted)", (outside or _WORLD[version])[0]
            )
        )
    if group_id and any(r.source == group_id for r in rules):
        found.append(Source(f"a machine of the cluster ({group_id})", PEER_ADDRESSES[0]))
    unique: dict[str, Source] = {}
    for source in found:
        if source.address in SCHEDULER_ADDRESSES:
            notes.append(
                f"{source.label} ({source.address}) is the rehearsal scheduler's own address; not rehearsed."
            )
            continue
        unique.setdefault(source.address, source)
    chosen = list(unique.values())
    if len(chosen) > MAX_SOURCES:
        notes.append(
            f"{len(chosen) - MAX_SOURCES} more sources not rehearsed (at most {MAX_SOURCES})."
        )
        chosen = chosen[:MAX_SOURCES]
    return chosen, notes


def _inside(address: str, network) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.version == network.version and ip in network


def _sample(network) -> str | None:
    """An address inside ``network`` that is not one of the rehearsal's own machines."""
    for offset in (5, 6, 7, 1, 0):
        if offset < network.num_addresses:
            address = str(network.network_address + offset)
            if address not in MEMBERS:
                return address
    return None


def predict(
    rules: Sequence[Rule], port: int, address: str, *, group_id: str | None = None
) -> tuple[str, str]:
    """``reach``'s verdict for ``address`` on ``port`` and why; a rule from the group itself stands
    for the cluster's machines, whose addresses here are :data:`MEMBERS`."""
    members = [str(ipaddress.ip_network(m)) for m in MEMBERS]
    expanded = [
        replace(rule, source=member)
        for rule in rules
        for member in (members if rule.source == group_id else [rule.source])
    ]
    rule = admitting_rule(expanded, port, address, None)
    if rule is None:
        return NO, f"no rule admits {address} on port {port}."
    source = group_id if rule.source in members and group_id else rule.source
    return YES, f"admitted by {rule.protocol} {rule.ports} from {source}."


def permissions(rules: Iterable[Rule]) -> list[dict]:
    """The rules back as EC2's ``IpPermissions``, the form the translation reads."""
    from ..provision.aws import permissions_from_rules

    return permissions_from_rules(rules)


# --------------------------------------------------------------------------------------------------
# The process's rehearsal: built once, reused, torn down when asked, idle or at exit

_lock = threading.RLock()
_current: Rehearsal | None = None
_idle: threading.Timer | None = None


def current(scheduler_port: int, dashboard_port: int, *, progress=None) -> Rehearsal:
    """The running rehearsal for these ports, started (and announced through ``progress``) if need be."""
    global _current
    with _lock:
        if _current is not None and (
            not _current.alive
            or (_current.scheduler_port, _current.dashboard_port)
            != (scheduler_port, dashboard_port)
        ):
            stop()
        if _current is None:
            if progress is not None:
                progress(
                    "starting the rehearsal: network namespaces and a dask scheduler on ports "
                    f"{scheduler_port} and {dashboard_port} (a few seconds, once)"
                )
            _current = Rehearsal(scheduler_port, dashboard_port).start()
        return _current


def stop() -> bool:
    """Tear the rehearsal down (namespaces, scheduler); False when none was running."""
    global _current, _idle
    with _lock:
        if _idle is not None:
            _idle.cancel()
            _idle = None
        if _current is None:
            return False
        running, _current = _current, None
        running.close()
        return True


def _touch(idle_seconds: float) -> None:
    """Restart the idle clock: the rehearsal goes after ``idle_seconds`` without use."""
    global _idle
    with _lock:
        if _idle is not None:
            _idle.cancel()
        _idle = threading.Timer(idle_seconds, stop)
        _idle.daemon = True
        _idle.name = "coiled-jupyter-rehearsal-idle"
        _idle.start()


atexit.register(stop)


# --------------------------------------------------------------------------------------------------
# Rehearsing


def measure(
    rehearsal: Rehearsal,
    rules: Sequence[Rule],
    chosen: Sequence[Source],
    *,
    group_id: str | None = None,
    client_timeout: float = CLIENT_TIMEOUT,
    http_timeout: float = HTTP_TIMEOUT,
) -> list[Row]:
    """Load ``rules``, place ``chosen`` and probe each: a real Client to the scheduler port, an HTTP
    GET of the dashboard, all at once; one row per source and port."""
    text = ruleset(permissions(rules), group_id=group_id, members=MEMBERS).text
    rehearsal.load(text)
    namespaces = rehearsal.place([s.address for s in chosen])
    jobs = []
    for source, namespace in zip(chosen, namespaces):
        version = ipaddress.ip_address(source.address).version
        jobs.append(
            (
                source,
                "scheduler",
                rehearsal.scheduler_port,
                namespace,
                "client",
                version,
                client_timeout,
            )
        )
        if rehearsal.dashboard_port != rehearsal.scheduler_port:  # else it is the scheduler's
            jobs.append(
                (
                    source,
                    "dashboard",
                    rehearsal.dashboard_port,
                    namespace,
                    "http",
                    version,
                    http_timeout,
                )
            )
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        measured = list(pool.map(lambda job: rehearsal.probe(job[3], job[4], job[5], job[6]), jobs))
    rows = []
    for (source, name, port, _, probe, _, _), found in zip(jobs, measured):
        verdict, reason = predict(rules, port, source.address, group_id=group_id)
        rows.append(_row(source, name, port, verdict, reason, found, probe))
    return rows


def _row(
    source: Source, name: str, port: int, verdict: str, reason: str, found: Measured, probe: str
) -> Row:
    label = {"client": "distributed.Client", "http": "HTTP GET", "tcp": "TCP connect"}[probe]
    return Row(
        source.label,
        source.address,
        name,
        port,
        verdict,
        reason,
        found.verdict,
        found.seconds,
        found.detail,
        label,
    )


def rehearse(
    table,
    *,
    scheduler_port: int,
    dashboard_port: int,
    local: Iterable[str] = (),
    public: str | None = None,
    idle_seconds: float = 600.0,
    progress=None,
) -> RehearsalResult:
    """Rehearse the group of ``table`` (a :class:`~coiled_jupyter.provision.results.RuleTable`)."""
    rules = list(table.rules)
    chosen, notes = sources(rules, group_id=table.group_id, local=local, public=public)
    with _lock:
        rehearsal = current(scheduler_port, dashboard_port, progress=progress)
        try:
            rows = measure(rehearsal, rules, chosen, group_id=table.group_id)
        finally:
            _touch(idle_seconds)
    translated = ruleset(permissions(rules), group_id=table.group_id, members=MEMBERS)
    wrong = sum(not row.agree for row in rows)
    summary = (
        f"rehearsed group {table.group_id} with packets: {len(rows)} probes from {len(chosen)} "
        f"sources, {'all as predicted' if not wrong else f'{wrong} not as predicted'}"
    )
    shared = (
        (
            f"the dashboard shares port {scheduler_port} with the scheduler (Coiled's HTTPS "
            "dashboard), so its verdict is the scheduler's.",
        )
        if dashboard_port == scheduler_port
        else ()
    )
    return RehearsalResult(
        table.target,
        summary,
        tuple(rows),
        table.group_id,
        notes=(
            *shared,
            *notes,
            *translated.notes,
            # Prefix lists are not rules of ours: enforced here, they admit nothing (fail closed).
            *(f"{entry}: admits nothing here." for entry in table.unmanageable),
        ),
        account_id=table.account_id,
    )


def live(
    target,
    rules: Sequence[Rule],
    *,
    host: str,
    from_address: str | None,
    public: str | None,
    scheduler_port: int,
    dashboard_port: int,
    timeout: float = LIVE_TIMEOUT,
    group_id: str | None = None,
    account_id: str = "",
) -> RehearsalResult:
    """TCP connects from this notebook to the cluster's real ``host``, each beside ``reach``'s verdict
    for ``from_address`` (the notebook address the traffic comes from), explained when they differ."""
    rows = []
    for name, port in (("scheduler", scheduler_port), ("dashboard", dashboard_port)):
        if from_address is None:
            verdict, reason = (
                "unknown",
                "the address this notebook's traffic comes from is unknown.",
            )
        else:
            rule = admitting_rule(list(rules), port, from_address, public)
            verdict = YES if rule else NO
            reason = (
                f"admitted by {rule}." if rule else f"no rule admits {from_address} on port {port}."
            )
        source = Source(f"this notebook ({from_address or 'address unknown'})", host)
        rows.append(
            _row(source, name, port, verdict, reason, tcp_connect(host, port, timeout), "tcp")
        )
    notes = tuple(_explain(row) for row in rows if not row.agree)
    summary = f"live: TCP connects from this notebook to {host}"
    return RehearsalResult(
        target, summary, tuple(rows), group_id, live=True, notes=notes, account_id=account_id
    )


def _explain(row: Row) -> str:
    where = f"port {row.port} ({row.port_name}) at {row.address}"
    if row.predicted == YES and row.detail == "timed out":
        return (
            f"{where}: the rules admit this notebook, but the connection timed out, so the path "
            "does not carry it: the traffic may leave from another address (a NAT, a proxy, a VPN), "
            "a route or a network ACL may drop it, or the machine is not up."
        )
    if row.predicted == YES:
        return (
            f"{where}: the rules admit this notebook and the packets arrived, but {row.detail}: "
            "nothing listens on that port."
        )
    if row.predicted == NO and row.measured == YES:
        return (
            f"{where}: connected although no rule admits this notebook's address: the traffic "
            "comes from another address (a VPN, a proxy), or another group of the machine admits it."
        )
    return f"{where}: the prediction is unknown; measured {row.measured} ({row.detail})."
