"""Tests of reach: this notebook's addresses and the reachability verdicts.

Network rule of these tests: they talk to loopback only. Every public-address lookup goes to an HTTP
server started here on 127.0.0.1, and the autouse fixture empties the configured services, removes
proxies and clears ``coiled.client_public_ip``, so that a forgotten ``services=`` asks no one outside.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import re
import socket
import threading
import time

import dask.config
import pytest

from coiled_jupyter import reach, settings
from coiled_jupyter.rules import IngressError, parse_ingress


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    # Registered before the override, so that leaving dask.config.set does not drop the defaults.
    settings.register_defaults()
    reach.forget_public_address()
    with dask.config.set(
        {
            "coiled-jupyter.public-ip.services": [],
            "coiled-jupyter.public-ip.services-ipv6": [],
            reach.PUBLIC_IP_CONFIG_KEY: None,
        }
    ):
        yield
    reach.forget_public_address()


class _Answers(http.server.BaseHTTPRequestHandler):
    """Answers by path: /ip and /ip6 give an address, /html an error page, /500 a server error."""

    bodies = {
        "/ip": (200, b"203.0.113.7\n"),
        "/ip6": (200, b"  2001:DB8::7 \n"),
        "/html": (200, b"<html><body>Service unavailable</body></html>"),
        "/500": (500, b"oops"),
    }

    def do_GET(self):
        self.server.asked.append(self.path)
        status, body = {**self.bodies, **self.server.answers}.get(self.path, (404, b"no"))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def service():
    """A loopback HTTP server; ``service.url(path)`` and ``service.asked`` (paths asked, in order)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    server.asked = []
    server.answers = {}  # per path, (status, body) that replace the usual answer
    server.url = lambda path: f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


# --------------------------------------------------------------------------------------------------
# public_address


def test_config_override_wins_without_asking(service):
    with dask.config.set({reach.PUBLIC_IP_CONFIG_KEY: " 198.51.100.1 "}):
        assert reach.public_address(services=[service.url("/ip")]) == "198.51.100.1"
    assert service.asked == []


def test_config_override_that_is_not_an_address_is_refused(service):
    with dask.config.set({reach.PUBLIC_IP_CONFIG_KEY: "my-laptop"}):
        with pytest.raises(
            IngressError, match="coiled.client_public_ip is 'my-laptop'.*203.0.113.7"
        ):
            reach.public_address(services=[service.url("/ip")])
    assert service.asked == []


def test_service_answer_is_the_address(service):
    assert reach.public_address(services=[service.url("/ip")], timeout=2) == "203.0.113.7"


def test_ipv6_answer_is_stripped_and_canonical(service):
    assert reach.public_address(services=[service.url("/ip6")], timeout=2) == "2001:db8::7"


def test_garbage_and_errors_are_skipped_for_the_next_service(service):
    assert (
        reach.public_address(services=[service.url("/html"), service.url("/500")], timeout=2)
        is None
    )
    assert (
        reach.public_address(
            services=[service.url("/html"), service.url("/500"), service.url("/ip")], timeout=2
        )
        == "203.0.113.7"
    )
    assert service.asked == ["/html", "/500", "/html", "/500", "/ip"]


def test_silent_server_gives_none_without_hanging():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # the kernel accepts the connection; nobody ever answers
    try:
        start = time.monotonic()
        address = reach.public_address(
            services=[f"http://127.0.0.1:{listener.getsockname()[1]}/"], timeout=0.3
        )
        elapsed = time.monotonic() - start
    finally:
        listener.close()
    assert address is None
    assert elapsed < 1.5


def test_refused_port_gives_none():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    assert reach.public_address(services=[f"http://127.0.0.1:{port}/"], timeout=2) is None


def test_no_services_and_bad_urls_give_none():
    assert reach.public_address(services=[]) is None
    assert reach.public_address() is None  # the fixture configures no services
    assert reach.public_address(services=["not a url"], timeout=0.3) is None


def test_success_is_cached_until_forgotten(service):
    assert reach.public_address(services=[service.url("/ip")], timeout=2) == "203.0.113.7"
    assert reach.public_address(services=[service.url("/ip")], timeout=2) == "203.0.113.7"
    assert reach.public_address(services=[]) == "203.0.113.7"
    assert service.asked == ["/ip"]
    with dask.config.set({reach.PUBLIC_IP_CONFIG_KEY: "198.51.100.1"}):
        assert reach.public_address() == "198.51.100.1"
    reach.forget_public_address()
    assert reach.public_address(services=[service.url("/ip6")], timeout=2) == "2001:db8::7"
    assert service.asked == ["/ip", "/ip6"]


def test_failure_is_not_cached(service):
    assert reach.public_address(services=[service.url("/html")], timeout=2) is None
    assert reach.public_address(services=[service.url("/ip")], timeout=2) == "203.0.113.7"


def test_single_url_string_is_one_service(service):
    with dask.config.set({"coiled-jupyter.public-ip.services": service.url("/ip")}):
        assert reach.public_address(timeout=2) == "203.0.113.7"


# --------------------------------------------------------------------------------------------------
# local_addresses


def test_local_addresses_are_valid_and_not_loopback_or_link_local():
    addresses = reach.local_addresses()
    assert len(addresses) == len(set(addresses))
    for text in addresses:
        ip = ipaddress.ip_address(text)
        assert str(ip) == text
        assert not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


# --------------------------------------------------------------------------------------------------
# check: verdicts


def rules(*items):
    return parse_ingress(list(items))


def test_public_ip_with_public_address_admitted():
    result = reach.check(
        rules({"ports": [8786, 8787], "cidr": "203.0.113.0/24"}),
        True,
        local=["10.1.2.3"],
        public="203.0.113.7",
    )
    assert (result.scheduler.verdict, result.dashboard.verdict) == ("yes", "yes")
    assert result.scheduler.address == "203.0.113.7"
    assert result.scheduler.rule == "203.0.113.0/24"
    assert result.warnings == ()


def test_public_ip_with_public_address_not_admitted():
    result = reach.check(
        rules({"ports": [8786, 8787], "cidr": "198.51.100.0/24"}),
        True,
        local=["10.1.2.3"],
        public="203.0.113.7",
    )
    assert (result.scheduler.verdict, result.dashboard.verdict) == ("no", "no")
    assert "203.0.113.7" in result.scheduler.reason
    [warning] = result.warnings
    assert "203.0.113.7 is not admitted on port 8786" in warning
    assert [c for c, _ in result.commands] == ["%coiled_ingress add 8786 me"]
    assert "`" not in warning and "%coiled" not in warning


def test_public_ip_not_admitted_but_private_is_suggests_private_ip():
    result = reach.check(
        rules({"ports": [8786], "cidr": "10.0.0.0/8"}),
        True,
        local=["10.1.2.3"],
        public="203.0.113.7",
    )
    assert result.scheduler.verdict == "no"
    [warning] = result.warnings
    assert "connect on the private IP (10.1.2.3 is admitted)" in warning
    assert ("%coiled_scheduler_ip private", "connect on the private IP") in result.commands


def test_public_ip_with_unknown_public_address(service):
    # The fixture configures no services, so the lookup finds nothing.
    result = reach.check(
        rules({"ports": [8786, 8787], "cidr": "198.51.100.0/24"}), True, local=["10.1.2.3"]
    )
    assert (result.scheduler.verdict, result.dashboard.verdict) == ("unknown", "unknown")
    assert result.public is None
    assert result.scheduler.reason == (
        "this notebook's public address is unknown (offline?); set "
        "coiled.client_public_ip to tell it."
    )
    assert result.warnings == ()
    assert service.asked == []


def test_public_address_is_looked_up_when_it_matters(service):
    with dask.config.set({"coiled-jupyter.public-ip.services": [service.url("/ip")]}):
        result = reach.check(rules({"ports": [8786], "cidr": "203.0.113.7"}), True, local=[])
    assert result.public == "203.0.113.7"
    assert result.scheduler.verdict == "yes"
    assert result.dashboard.verdict == "no"


def test_private_ip_does_not_look_up_the_public_address(service):
    with dask.config.set({"coiled-jupyter.public-ip.services": [service.url("/ip")]}):
        result = reach.check(
            rules({"ports": [8786], "cidr": "10.0.0.0/8"}), False, local=["10.1.2.3"]
        )
    assert result.public is None
    assert service.asked == []


def test_private_ip_with_local_address_admitted():
    result = reach.check(
        rules({"ports": [8786, 8787], "cidr": "10.1.0.0/16"}),
        False,
        local=["192.0.2.2", "10.1.2.3"],
        public="203.0.113.7",
    )
    assert (result.scheduler.verdict, result.dashboard.verdict) == ("yes", "yes")
    assert result.scheduler.address == "10.1.2.3"
    assert result.warnings == ()


def test_private_ip_with_only_public_ranges_warns():
    result = reach.check(
        rules({"ports": [8786, 8787], "cidr": ["203.0.113.0/24", "198.51.100.7"]}),
        False,
        local=["10.1.2.3"],
        public="203.0.113.7",
    )
    assert result.scheduler.verdict == "no"
    [warning] = result.warnings
    assert warning.startswith(
        "the client will connect on the scheduler's private IP, but the rules "
        "only admit public networks (198.51.100.7/32, 203.0.113.0/24)"
    )
    assert "add your VPC or VPN range, or connect on the public IP." in warning
    assert result.commands == (
        ("%coiled_ingress add 8786 10.1.0.0/16", "admit this notebook's network (10.1.2.3)"),
        ("%coiled_scheduler_ip public", "connect on the public IP instead"),
    )


def test_private_ip_with_private_ranges_elsewhere_warns_only_about_this_notebook():
    result = reach.check(
        rules({"ports": [8786, 8787], "cidr": "172.16.0.0/12"}),
        False,
        local=["10.1.2.3", "fd00::2"],
    )
    assert result.scheduler.verdict == "no"
    assert (
        "no rule admits 10.1.2.3 and fd00::2 (this notebook's private addresses)"
        in result.scheduler.reason
    )
    [warning] = result.warnings
    assert "private addresses 10.1.2.3 and fd00::2 are not admitted on port 8786" in warning
    assert result.commands == (
        ("%coiled_ingress add 8786 10.1.2.3", "admit this notebook alone (10.1.2.3)"),
    )


def test_private_ip_without_private_address_is_unknown():
    result = reach.check(rules({"ports": [8786], "cidr": "10.0.0.0/8"}), False, local=[])
    assert result.scheduler.verdict == "unknown"
    assert "no private address" in result.scheduler.reason


def test_dashboard_is_judged_on_its_own_port():
    result = reach.check(rules({"ports": [8786], "cidr": "10.0.0.0/8"}), False, local=["10.1.2.3"])
    assert (result.scheduler.verdict, result.dashboard.verdict) == ("yes", "no")


def test_ports_come_from_the_options_or_the_arguments():
    admitted = rules({"ports": [9000], "cidr": "10.0.0.0/8"})
    default = reach.check(admitted, False, local=["10.1.2.3"])
    assert (default.scheduler.port, default.dashboard.port) == (8786, 8787)
    moved = reach.check(
        admitted, False, local=["10.1.2.3"], scheduler_port=9000, dashboard_port=9001
    )
    assert (moved.scheduler.verdict, moved.dashboard.verdict) == ("yes", "no")


def test_udp_and_security_group_rules_admit_no_client():
    result = reach.check(
        rules(
            {"ports": [8786], "cidr": "10.0.0.0/8", "protocol": "udp"},
            {"ports": [8786], "cidr": "sg-0123456789abcdef0"},
        ),
        False,
        local=["10.1.2.3"],
    )
    assert result.scheduler.verdict == "no"


def test_me_admits_the_public_address():
    result = reach.check(
        rules({"ports": [8786, 8787], "cidr": "me"}), True, local=["10.1.2.3"], public="203.0.113.7"
    )
    assert result.scheduler.verdict == "yes"
    assert result.scheduler.rule == "me (203.0.113.7)"
    assert "admitted by me (203.0.113.7)" in result.scheduler.reason


def test_me_does_not_admit_private_addresses():
    result = reach.check(
        rules({"ports": [8786, 8787], "cidr": "me"}),
        False,
        local=["10.1.2.3"],
        public="203.0.113.7",
    )
    assert result.scheduler.verdict == "no"


def test_me_with_unknown_public_address_admits_nothing():
    result = reach.check(rules({"ports": [8786, 8787], "cidr": "me"}), True, local=["10.1.2.3"])
    assert result.scheduler.verdict == "unknown"


def test_open_to_the_world_warns_with_the_ports():
    result = reach.check(
        rules({"ports": [8786, 8787], "cidr": "everyone"}), True, local=[], public="203.0.113.7"
    )
    assert (result.scheduler.verdict, result.dashboard.verdict) == ("yes", "yes")
    [warning] = result.warnings
    assert warning.startswith(
        "ports 8786 and 8787 are open to the whole internet (0.0.0.0/0 and ::/0)"
    )
    assert "this notebook's public address (203.0.113.7)" in warning
    assert [c for c, _ in result.commands] == [
        "%coiled_ingress add 8786,8787 me",
        "%coiled_ingress remove 8786,8787 0.0.0.0/0",
        "%coiled_ingress remove 8786,8787 ::/0",
    ]
    # Over the built-in default, declaring a rule replaces it: nothing is left to remove.
    default = reach.check(
        rules({"ports": [8786, 8787], "cidr": "everyone"}),
        True,
        local=[],
        public="203.0.113.7",
        declared=False,
    )
    assert [c for c, _ in default.commands] == ["%coiled_ingress add 8786,8787 me"]


def test_open_to_the_world_names_ranges_and_protocols():
    result = reach.check(
        rules(
            {"ports": ["8000-8100"], "cidr": "0.0.0.0/0"},
            {"ports": [22], "cidr": "::/0", "protocol": "udp"},
        ),
        False,
        local=[],
    )
    # 8000-8100 misses the scheduler's 8786: that is said first (issue 18), then the open ports.
    lockout, warning = result.warnings
    assert lockout.endswith("these rules open 8000-8100 only, so no client will connect: add 8786.")
    assert warning.startswith(
        "ports 8000-8100 and 22/udp are open to the whole internet (0.0.0.0/0 and ::/0)"
    )
    assert [c for c, _ in result.commands] == [
        "%coiled_ingress add 8786 me",  # the scheduler's port, to this notebook, not the internet
        "%coiled_ingress add 8000-8100 me",
        "%coiled_ingress remove 8000-8100 0.0.0.0/0",
        "%coiled_ingress remove 22 ::/0 --protocol udp",
    ]


def test_open_to_the_world_does_not_hide_private_mistakes():
    # 0.0.0.0/0 also admits private addresses, so it is not "public ranges only".
    result = reach.check(rules({"ports": [8786], "cidr": "0.0.0.0/0"}), False, local=["10.1.2.3"])
    assert result.scheduler.verdict == "yes"
    [warning] = result.warnings
    assert warning.startswith("port 8786 is open to the whole internet (0.0.0.0/0)")


def test_ipv6_addresses():
    ipv6 = rules({"ports": [8786, 8787], "cidr": "2001:db8::/32"})
    assert reach.check(ipv6, True, local=[], public="2001:DB8::7").scheduler.verdict == "yes"
    assert reach.check(ipv6, True, local=[], public="203.0.113.7").scheduler.verdict == "no"
    private6 = rules({"ports": [8786, 8787], "cidr": "fd00::/8"})
    result = reach.check(private6, False, local=["10.1.2.3", "fd00::2"])
    assert result.scheduler.verdict == "yes"
    assert result.scheduler.address == "fd00::2"
    assert result.warnings == ()


def test_to_dict_is_json_and_summary_is_plain_text():
    result = reach.check(
        rules({"ports": [8786, 8787], "cidr": "198.51.100.0/24"}),
        True,
        local=["10.1.2.3"],
        public="203.0.113.7",
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["scheduler"] == {
        "name": "scheduler",
        "port": 8786,
        "verdict": "no",
        "reason": result.scheduler.reason,
        "address": "203.0.113.7",
        "rule": None,
    }
    assert data["public_address"] == "203.0.113.7"
    assert data["local_addresses"] == ["10.1.2.3"]
    assert data["warnings"] == list(result.warnings)


# --------------------------------------------------------------------------------------------------
# `me`: looked up again after a short while, both families, never through a proxy


def test_an_answer_is_reused_only_for_the_configured_seconds(service):
    url = service.url("/ip")
    assert reach.public_address(services=[url], timeout=2) == "203.0.113.7"
    service.answers["/ip"] = (200, b"203.0.113.8")  # the notebook moved to another network
    assert reach.public_address(services=[url], timeout=2) == "203.0.113.7"  # cached
    with dask.config.set({"coiled-jupyter.public-ip.cache-seconds": 0.2}):
        time.sleep(0.3)
        assert reach.public_address(services=[url], timeout=2) == "203.0.113.8"
    assert service.asked == ["/ip", "/ip"]


def test_a_stale_answer_is_not_used_when_the_services_fail(service):
    assert reach.public_address(services=[service.url("/ip")], timeout=2) == "203.0.113.7"
    found = reach.public_addresses(services=[service.url("/500")], timeout=2, max_age=0)
    assert found is None


def test_both_families_are_asked_at_once_and_me_admits_both(service):
    found = reach.public_addresses(
        services=[service.url("/html"), service.url("/ip")],
        services_ipv6=[service.url("/ip6")],
        timeout=2,
    )
    assert found.addresses == ("203.0.113.7", "2001:db8::7")
    assert found.source == f"{service.url('/ip')} and {service.url('/ip6')}"
    assert found.looked_up_at.tzinfo is not None
    assert abs(time.time() - found.looked_up_at.timestamp()) < 5
    assert re.fullmatch(
        r"203\.0\.113\.7 and 2001:db8::7 \(looked up at \d\d:\d\d:\d\d UTC from "
        r"http://127\.0\.0\.1:\d+/ip and http://127\.0\.0\.1:\d+/ip6\)",
        found.describe(),
    )
    with dask.config.set({"coiled-jupyter.public-ip.services-ipv6": [service.url("/ip6")]}):
        reach.forget_public_address()
        result = reach.check(
            rules({"ports": [8786], "cidr": "me"}),
            True,
            local=[],
        )
    assert result.lookup is not None and "2001:db8::7" in result.lookup.addresses
    assert result.to_dict()["public_lookup"]["addresses"] == ["2001:db8::7"]


def test_the_lookup_does_not_go_through_the_environments_proxy(service, monkeypatch):
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    proxy.asked = []
    proxy.answers = {service.url("/ip"): (200, b"198.51.100.99")}  # what a proxy would be seen as
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.server_address[1]}")
        assert reach.public_address(services=[service.url("/ip")], timeout=2) == "203.0.113.7"
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()
    assert proxy.asked == []
    assert service.asked == ["/ip"]


def test_the_settings_and_the_plan_show_what_me_became_and_apply_follows_a_move(
    service, cloud, dask_config
):
    from coiled_jupyter import session

    with dask.config.set(
        {
            "coiled-jupyter.public-ip.services": [service.url("/ip")],
            "coiled-jupyter.public-ip.cache-seconds": 0.2,
        }
    ):
        view = session.add(8786, "me", cluster="moving")
        [me_note] = [n for n in view.to_payload()["notes"] if n.startswith("me is")]
        assert re.fullmatch(
            r"me is 203\.0\.113\.7 \(looked up at \d\d:\d\d:\d\d UTC from http://127\.0\.0\.1:\d+/ip"
            r"\); it is looked up again when the rules are sent\.",
            me_note,
        )
        assert f"note: {me_note}" in repr(view.expanded())  # among the details
        session.apply("moving")
        service.answers["/ip"] = (200, b"203.0.113.8")
        time.sleep(0.3)
        plan = session.plan("moving")
        assert any(n.startswith("me is 203.0.113.8 (looked up at ") for n in plan.notes)
        assert [(r.action, r.source) for r in _rows(plan)] == [
            ("add", "203.0.113.8/32"),
            ("remove", "203.0.113.7/32"),
        ]
        session.apply("moving")
    [group] = cloud.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["*moving*"]}]
    )["SecurityGroups"]
    cidrs = [r["CidrIp"] for p in group["IpPermissions"] for r in p.get("IpRanges", [])]
    assert cidrs == ["203.0.113.8/32"]


def _rows(plan):
    import types

    return [
        types.SimpleNamespace(**row)
        for row in plan.to_payload()["rows"]
        if row["action"] in ("add", "remove")
    ]
