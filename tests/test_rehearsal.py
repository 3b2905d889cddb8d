"""The rehearsal with packets: the sandbox's group enforced by nftables in front of a real scheduler.

One rehearsal (network namespaces linked only to each other, a real ``distributed`` scheduler and
worker) is built for the module; each test swaps the nft ruleset and the client addresses. Every
connection goes between those namespaces only. At the end nothing of ours is left (``ip netns list``,
``ip link``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import ipaddress
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coiled_jupyter import session
from coiled_jupyter.provision.target import target
from coiled_jupyter.rehearsal import namespaces
from coiled_jupyter.rehearsal.namespaces import BRIDGE, PREFIX, Rehearsal, unavailable
from coiled_jupyter.rehearsal.nft import ruleset
from coiled_jupyter.rehearsal.rehearse import Source, measure, permissions, predict, sources
from coiled_jupyter.rehearsal.result import RehearsalResult
from coiled_jupyter.rules import Rule

REASON = unavailable()
# A link the rehearsal makes (the bridge, a veth end, a namespace's name) seen from the host.
OUR_LINK = re.compile(rf": ({BRIDGE}|{PREFIX}\S*|p-(sched|c\d+))[@:]")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

SCHEDULER_PORT, DASHBOARD_PORT = 8786, 8787
# The seeds' two-CIDR example: the scheduler from the VPN, the dashboard from the office.
TWO_CIDRS = [Rule("tcp", 8786, 8786, "10.1.0.0/16"), Rule("tcp", 8787, 8787, "10.32.0.0/16")]


def leftovers() -> tuple[list[str], list[str]]:
    """This process's namespaces, and links of ours in the host's namespace (never any)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    ours = [line for line in links.stdout.splitlines() if OUR_LINK.search(line)]
    return namespaces.ours(), ours


@pytest.fixture(scope="module")
def rehearsal():
    with Rehearsal(SCHEDULER_PORT, DASHBOARD_PORT) as running:
        yield running
    assert leftovers() == ([], [])


def verdicts(rows) -> dict[tuple[str, str], tuple[str, str]]:
    return {(r.address, r.port_name): (r.predicted, r.measured) for r in rows}


def test_the_two_cidr_example_is_enforced_with_packets(rehearsal):
    chosen, _ = sources(TWO_CIDRS)
    assert [(s.label, s.address) for s in chosen] == [
        ("inside 10.1.0.0/16", "10.1.0.5"),
        ("inside 10.32.0.0/16", "10.32.0.5"),
        ("the world", "198.51.100.7"),
    ]
    rows = measure(rehearsal, TWO_CIDRS, chosen)
    assert verdicts(rows) == {
        ("10.1.0.5", "scheduler"): ("yes", "yes"),
        ("10.1.0.5", "dashboard"): ("no", "no"),
        ("10.32.0.5", "scheduler"): ("no", "no"),
        ("10.32.0.5", "dashboard"): ("yes", "yes"),
        ("198.51.100.7", "scheduler"): ("no", "no"),
        ("198.51.100.7", "dashboard"): ("no", "no"),
    }
    by = {(r.address, r.port_name): r for r in rows}
    assert by["10.1.0.5", "scheduler"].detail == "connected"
    assert by["10.32.0.5", "dashboard"].detail == "HTTP 200"
    assert by["198.51.100.7", "scheduler"].detail == "timed out"


def test_ipv6_and_a_group_referencing_itself(rehearsal):
    group = "sg-0123456789abcdef0"
    rules = [Rule("tcp", 8786, 8787, "2001:db8::/32"), Rule("all", 0, 65535, group)]
    chosen, _ = sources(rules, group_id=group)
    labels = {s.label: s.address for s in chosen}
    assert labels["inside 2001:db8::/32"] == "2001:db8::5"
    assert labels[f"a machine of the cluster ({group})"] == "172.31.0.11"
    rows = measure(rehearsal, rules, chosen, group_id=group)
    assert all(r.agree for r in rows), [r.to_dict() for r in rows if not r.agree]
    found = verdicts(rows)
    assert found["2001:db8::5", "scheduler"] == ("yes", "yes")
    assert found["172.31.0.11", "dashboard"] == ("yes", "yes")
    assert found["3fff::7", "scheduler"] == ("no", "no")  # the world, outside 2001:db8::/32


def test_a_disagreement_would_show(rehearsal):
    """The comparison can fail: a prediction made from other rules than those enforced disagrees."""
    chosen = [Source("inside 10.1.0.0/16", "10.1.0.5")]
    rows = measure(rehearsal, TWO_CIDRS, chosen)
    wrong = predict([], 8786, "10.1.0.5")[0]
    assert wrong == "no" and rows[0].measured == "yes", rows[0]
    result = RehearsalResult(target("x"), "s", (dataclasses.replace(rows[0], predicted=wrong),))
    html = result._repr_mimebundle_()["text/html"]
    assert '<tr class="cj-disagree">' in html
    assert "one of them is wrong" in result._repr_mimebundle_()["text/plain"]


# --------------------------------------------------------------------------------------------------
# Property: random rules and sources, predicted == measured


def networks(version: int):
    """Networks in a small space near the sample addresses, so that hits and misses both happen."""
    if version == 4:
        base = st.sampled_from(["10.1.0.0", "10.1.128.0", "10.32.0.0", "198.51.100.0", "0.0.0.0"])
        return st.builds(
            lambda b, p: str(ipaddress.ip_network(f"{b}/{p}", strict=False)),
            base,
            st.sampled_from([0, 8, 16, 17, 24, 32]),
        )
    base = st.sampled_from(["2001:db8::", "2001:db8:8000::", "fd00::", "::"])
    return st.builds(
        lambda b, p: str(ipaddress.ip_network(f"{b}/{p}", strict=False)),
        base,
        st.sampled_from([0, 16, 32, 33, 64, 128]),
    )


@st.composite
def rules_and_clients(draw):
    rules = []
    for _ in range(draw(st.integers(0, 4))):
        protocol = draw(st.sampled_from(["tcp", "tcp", "udp", "all"]))
        low = draw(st.sampled_from([22, 8000, 8786, 8787]))
        high = draw(st.sampled_from([low, low, 8787, 9000]))
        network = draw(networks(draw(st.sampled_from([4, 4, 6]))))
        if protocol == "all":
            low, high = 0, 65535
        rules.append(Rule(protocol, low, max(low, high), network))
    addresses = draw(
        st.lists(
            st.one_of(
                st.sampled_from(
                    [
                        "10.1.0.5",
                        "10.1.200.9",
                        "10.32.7.1",
                        "198.51.100.7",
                        "2001:db8::5",
                        "2001:db8:8000::9",
                        "fd00::5",
                    ]
                ),
                st.ip_addresses(v=4, network="10.0.0.0/8").map(str),
                st.ip_addresses(v=6, network="2001:db8::/32").map(str),
            ),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    return rules, [
        Source("random", a) for a in addresses if a not in namespaces.SCHEDULER_ADDRESSES
    ]


def tcp_rows(rehearsal, rules, chosen, timeout: float = 0.5):
    """Like :func:`measure`, with plain TCP connects to both ports (quicker than a Client)."""
    rehearsal.load(ruleset(permissions(rules)).text)
    placed = rehearsal.place([s.address for s in chosen])
    jobs = [
        (source, namespace, kind, port)
        for source, namespace in zip(chosen, placed)
        for kind, port in (("tcp", SCHEDULER_PORT), ("tcp-dashboard", DASHBOARD_PORT))
    ]

    def probe(job):
        source, namespace, kind, _ = job
        return rehearsal.probe(
            namespace, kind, ipaddress.ip_address(source.address).version, timeout
        )

    with concurrent.futures.ThreadPoolExecutor(len(jobs) or 1) as pool:
        found = list(pool.map(probe, jobs))
    return [
        (source.address, port, predict(rules, port, source.address)[0], measured.verdict)
        for (source, _, _, port), measured in zip(jobs, found)
    ]


@settings(
    max_examples=200,
    # Each case is bounded by its probes, which give up after 0.5 s; no wall-clock deadline on top.
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(rules_and_clients())
def test_random_rules_predicted_equals_measured(rehearsal, case):
    rules, chosen = case
    rows = tcp_rows(rehearsal, rules, chosen)
    wrong = [row for row in rows if row[2] != row[3]]
    assert not wrong, (rules, wrong, rehearsal.counters())


@settings(
    max_examples=8,
    deadline=None,  # bounded by the probes: 2 s for a Client, 1 s for the GET
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(rules_and_clients())
def test_random_rules_with_a_real_client_and_dashboard(rehearsal, case):
    rules, chosen = case
    rows = measure(rehearsal, rules, chosen, client_timeout=2.0, http_timeout=1.0)
    assert all(r.agree for r in rows), [r.to_dict() for r in rows if not r.agree]


# --------------------------------------------------------------------------------------------------
# Through the session: the sandbox's group, rehearsed


@pytest.fixture
def borrowed(rehearsal):
    """The module's rehearsal as the process's current one: it holds the lock, so the session's
    rehearse would not start its own; the idle clock is stopped after, not the rehearsal."""
    from coiled_jupyter.rehearsal import rehearse as module

    module._current = rehearsal
    yield module
    module._current = None
    if module._idle is not None:
        module._idle.cancel()


def test_rehearse_reads_the_group_from_the_sandbox(sandbox, dask_config, borrowed):
    session.set_settings(
        [
            {"ports": [8786], "cidr": "10.1.0.0/16"},
            {"ports": [8787], "cidr": "10.32.0.0/16"},
        ],
        cluster="rehearsed",
    )
    session.apply("rehearsed")
    result = session.rehearse("rehearsed")
    assert isinstance(result, RehearsalResult)
    payload = result.to_payload()
    assert payload["kind"] == "rehearsal" and payload["warnings"] == []
    found = {(r["address"], r["port"]): (r["predicted"], r["measured"]) for r in payload["rows"]}
    assert found["10.1.0.5", "8786 (scheduler)"] == ("yes", "yes")
    assert found["10.32.0.5", "8787 (dashboard)"] == ("yes", "yes")
    assert found["198.51.100.7", "8786 (scheduler)"] == ("no", "no")
    # The group admits itself (the rule every group of ours has): a machine of the cluster connects.
    assert found["172.31.0.11", "8786 (scheduler)"] == ("yes", "yes")
    text = result._repr_mimebundle_()["text/plain"]
    assert text.startswith("Firewall rehearsal: cluster 'rehearsed'")


def test_a_prefix_list_admits_nothing_and_is_named(borrowed):
    from coiled_jupyter.provision.results import RuleTable
    from coiled_jupyter.provision.target import target

    entry = "tcp 8786-8786 from prefix list pl-12345678"
    table = RuleTable(
        target("x"), "", "sg-0123456789abcdef0", "g", None, tuple(TWO_CIDRS), ("", ""), (entry,)
    )
    result = borrowed.rehearse(table, scheduler_port=SCHEDULER_PORT, dashboard_port=DASHBOARD_PORT)
    assert f"{entry}: admits nothing here." in result.to_payload()["notes"]
    assert result.disagreements == []
