"""Coiled's network keywords both ways (issue 18, items 3 and 4), checked against the installed
``coiled`` package: its ``cluster_firewall``, and the very lines of ``coiled.Cluster.__init__`` that
turn ``allow_ingress_from`` and friends into ingress or refuse them beside ``backend_options``
(run as they are, on a stand-in ``self`` that holds only the attributes they read: creating a real
cluster needs Coiled's server).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import textwrap
import types

import coiled
import dask.config
import pytest
from coiled.exceptions import ArgumentCombinationError
from coiled.utils import cluster_firewall, validate_backend_options

from coiled_jupyter import network_args, session
from coiled_jupyter.rules import IngressError, parse_ingress

ME_ADDRESS = "203.0.113.7"
NEWER_PAGE = [{"ports": [22, 443], "cidr": "10.1.0.0/16"}]
SEEDS = [{"ports": [8786, 8787], "cidr": "10.1.0.0/16"}]


@pytest.fixture(autouse=True)
def _coiled_kind_and_me(monkeypatch):
    """A Coiled cluster, and a public address Coiled's client and ours both read from config."""
    monkeypatch.delenv("DASK_COILED_JUPYTER__CLUSTER_KIND", raising=False)
    monkeypatch.setitem(dask.config.config["coiled-jupyter"], "cluster-kind", "coiled")
    coiled_keys = dask.config.config.setdefault("coiled", {})
    monkeypatch.setitem(coiled_keys, "client_public_ip", ME_ADDRESS)


def _network_block() -> str:
    """The statements of ``coiled.Cluster.__init__`` from ``scheduler_port = ...`` through the
    ``if used_network_kwargs:`` block, as installed."""
    source = textwrap.dedent(inspect.getsource(coiled.Cluster.__init__))
    body = ast.parse(source).body[0].body
    start = next(
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "scheduler_port" for t in node.targets)
    )
    end = next(
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "used_network_kwargs"
    )
    return "\n".join(ast.unparse(node) for node in body[start : end + 1])


def coiled_cluster_ingress(*, use_dashboard_https=True, backend_options=None, **keywords):
    """What ``coiled.Cluster(**keywords, backend_options=...)`` sets as its ingress (or raises)."""
    names = (
        "allow_ingress_from",
        "allow_ssh_from",
        "allow_ssh",
        "allow_spark",
        "scheduler_port",
        "open_extra_ports",
    )
    me = types.SimpleNamespace(
        use_dashboard_https=use_dashboard_https,
        scheduler_options={},
        backend_options=backend_options,
    )
    scope = {
        "self": me,
        "dask": dask,
        "cluster_firewall": cluster_firewall,
        "ArgumentCombinationError": ArgumentCombinationError,
        "backend_options": backend_options,
        **{name: keywords.get(name) for name in names},
    }
    exec(compile(_network_block(), "<coiled.Cluster.__init__>", "exec"), scope)
    return (me.backend_options or {}).get("ingress"), me.scheduler_options


def ours(*, use_dashboard_https=True, **keywords) -> list[dict]:
    """Our ingress for the keywords, ``me`` and ``everyone`` written as Coiled's client writes them."""
    args, _ = network_args.parse(keywords)
    written = {"me": f"{ME_ADDRESS}/32", "everyone": "0.0.0.0/0"}
    return [
        {"ports": rule["ports"], "cidr": written.get(rule["cidr"], rule["cidr"])}
        for rule in args.ingress(use_dashboard_https=use_dashboard_https)
    ]


import dask  # noqa: E402  (the name the exec'd lines use)

KEYWORD_CASES = [
    dict(allow_ingress_from=target, **extra)
    for target, extra in itertools.product(
        ["me", "everyone", "10.1.0.0/16"],
        [
            {},
            {"allow_ssh": True},
            {"allow_ssh": False},
            {"allow_ssh_from": "10.2.0.0/16"},
            {"allow_ssh_from": "me"},
            {"allow_ssh": True, "allow_ssh_from": "10.2.0.0/16"},
            {"allow_spark": False},
            {"allow_spark": True},
            {"open_extra_ports": [8786, 8787]},
            {"open_extra_ports": [22, 443]},
            {"open_extra_ports": [22], "allow_ssh_from": "10.2.0.0/16"},
            {"scheduler_port": 8786},
            {"scheduler_port": 443, "allow_ssh": True, "open_extra_ports": [8888]},
        ],
    )
] + [{"allow_ssh": True}, {"scheduler_port": 8786}, {"allow_spark": False}]


@pytest.mark.parametrize("https", [True, False])
@pytest.mark.parametrize("keywords", KEYWORD_CASES, ids=str)
def test_keywords_become_exactly_what_coiled_cluster_builds(keywords, https):
    theirs, _ = coiled_cluster_ingress(use_dashboard_https=https, **keywords)
    assert ours(use_dashboard_https=https, **keywords) == theirs  # duplicates and all


def test_me_and_everyone_stay_symbolic():
    args, _ = network_args.parse({"allow_ingress_from": "me", "allow_ssh_from": "everyone"})
    assert args.ingress() == [
        {"ports": [443, 15003, 443], "cidr": "me"},
        {"ports": [22], "cidr": "everyone"},
    ]
    rules = args.rules()
    assert {r.source for r in rules} == {"me", "0.0.0.0/0", "::/0"}


def test_coiled_refuses_keywords_beside_ingress_and_so_do_we(monkeypatch):
    with pytest.raises(ArgumentCombinationError):
        coiled_cluster_ingress(allow_ingress_from="me", backend_options={"ingress": NEWER_PAGE})
    # ... also when the scheduler port comes from Dask's config:
    monkeypatch.setitem(dask.config.config["coiled"], "scheduler_port", 8786)
    with pytest.raises(ArgumentCombinationError):
        coiled_cluster_ingress(backend_options={"ingress": NEWER_PAGE})
    with pytest.raises(IngressError, match="both as rules and as keywords"):
        session.set_settings(NEWER_PAGE, allow_ingress_from="me")


# --------------------------------------------------------------------------------------------------
# Through every front end: the keyword form in


def test_cell_takes_coiled_keywords_in_yaml(ip):
    view = ip.run_cell_magic(
        "coiled_ingress", "", "allow_ingress_from: me\nallow_ssh: true\nopen_extra_ports: [8786]\n"
    )
    assert [(r.ports, r.source) for r in view.settings.rules] == [
        ("22", "me"),
        ("443", "me"),
        ("8786", "me"),
        ("15003", "me"),
    ]
    assert not view.reachability.connect_warnings


def test_set_line_takes_key_value_words(ip):
    view = ip.run_line_magic(
        "coiled_ingress", "set allow_ingress_from=10.1.0.0/16 scheduler_port=8786"
    )
    assert [(r.ports, r.source) for r in view.settings.rules] == [
        ("443", "10.1.0.0/16"),
        ("8786", "10.1.0.0/16"),
        ("15003", "10.1.0.0/16"),
    ]
    payload = view.to_payload()
    assert payload["ports"]["scheduler_port"] == 8786
    assert payload["ports"]["scheduler_port_origin"] == "notebook session (this kernel)"
    # Someone can connect (10.1.0.0/16), on the port the scheduler listens on, just not this notebook.
    assert view.reachability.scheduler.port == 8786
    assert not [w for w in view.reachability.connect_warnings if "no client will connect" in w]
    assert "is not admitted on port 8786" in view.reachability.connect_warnings[0]


def test_python_api_takes_the_same_keywords():
    view = session.set_settings(allow_ingress_from="me", allow_ssh_from="10.2.0.0/16")
    assert [(r.ports, r.source) for r in view.settings.rules] == [
        ("22", "10.2.0.0/16"),
        ("443", "me"),
        ("15003", "me"),
    ]


@pytest.mark.parametrize(
    "value, sentence",
    [
        (
            "allow_ingres_from=me",
            "unknown key 'allow_ingres_from'; did you mean 'allow_ingress_from'?",
        ),
        ({"allow_ingress_from": "10.1.0.2/16"}, "host bits set"),
        ({"allow_ssh": "yes"}, "allow_ssh in the settings is 'yes'; write true or false."),
        ({"scheduler_port": 0}, "scheduler_port in the settings is 0; write a port number"),
        ({"open_extra_ports": [True]}, "open_extra_ports in the settings (item 1) is True"),
        ({"allow_ingress_from": "sg-0123456789abcdef0"}, "not a group"),
    ],
)
def test_bad_keywords_are_one_sentence_and_change_nothing(value, sentence):
    before = session.show().settings.rules
    with pytest.raises(IngressError, match=re.escape(sentence)):
        session.set_settings(value)
    assert session.show().settings.rules == before


def test_a_refused_cell_leaves_kind_and_port_as_they_were(ip):
    from IPython.core.error import UsageError

    from coiled_jupyter import ports

    with pytest.raises(UsageError):
        ip.run_cell_magic(
            "coiled_ingress", "--kind dask", "allow_ingress_from: me\nscheduler_port: x\n"
        )
    assert ports.model().kind == "coiled"
    assert ports.model().scheduler == 443


# --------------------------------------------------------------------------------------------------
# cluster_kwargs: the form the person can pass as it is


def _coiled_accepts(kwargs: dict):
    """Run Coiled's own lines on ``kwargs``; returns the ingress it sets."""
    backend_options = kwargs.get("backend_options")
    if backend_options is not None:
        validate_backend_options(backend_options)
    others = ("backend_options", "use_scheduler_public_ip", "scheduler_options")
    network = {k: v for k, v in kwargs.items() if k not in others}
    ingress, _ = coiled_cluster_ingress(
        backend_options=backend_options and dict(backend_options), **network
    )
    return ingress


def test_cluster_kwargs_gives_the_keyword_form_when_the_rules_can_say_it(sandbox):
    session.set_settings("allow_ingress_from=me allow_ssh=true")
    kwargs = session.cluster_kwargs()
    assert dict(kwargs) == {
        "allow_ingress_from": "me",
        "allow_ssh": True,
        "use_scheduler_public_ip": True,
    }
    built = parse_ingress(_coiled_accepts(kwargs))
    assert {(r.ports, r.source) for r in built} == {
        ("22", f"{ME_ADDRESS}/32"),
        ("443", f"{ME_ADDRESS}/32"),
        ("15003", f"{ME_ADDRESS}/32"),
    }


def test_the_newer_page_example_is_said_as_keywords(sandbox):
    session.set_settings(NEWER_PAGE)
    kwargs = session.cluster_kwargs()
    assert dict(kwargs) == {
        "allow_ingress_from": "10.1.0.0/16",
        "allow_ssh": True,
        "allow_spark": False,
        "use_scheduler_public_ip": True,
    }
    built = parse_ingress(_coiled_accepts(kwargs))
    assert {r.key for r in built} == {r.key for r in parse_ingress(NEWER_PAGE)}


def test_rules_keywords_cannot_say_go_as_backend_options_never_both(sandbox):
    session.set_settings(SEEDS)
    kwargs = session.cluster_kwargs()
    assert set(kwargs) == {"backend_options", "use_scheduler_public_ip"}
    assert _coiled_accepts(kwargs) == [{"ports": [8786, 8787], "cidr": "10.1.0.0/16"}]


def test_scheduler_port_in_dask_config_beside_ingress_is_warned(sandbox, monkeypatch):
    monkeypatch.setitem(dask.config.config["coiled"], "scheduler_port", 8786)
    session.set_settings([{"ports": [8786], "cidr": "10.1.0.0/16"}])
    refused = r"refuses it beside explicit ingress \(ArgumentCombinationError\)"
    with pytest.warns(UserWarning, match=refused) as caught:
        kwargs = session.cluster_kwargs()
    assert len(caught) == 1
    with pytest.raises(ArgumentCombinationError):
        _coiled_accepts(kwargs)


def test_a_session_scheduler_port_the_keywords_cannot_say_goes_as_scheduler_options(sandbox):
    session.set_settings("allow_ingress_from=10.1.0.0/16 scheduler_port=8786")
    session.add("9000", "10.9.0.0/16")
    kwargs = session.cluster_kwargs()
    assert kwargs["scheduler_options"] == {"port": 8786}
    assert "allow_ingress_from" not in kwargs
    _coiled_accepts(kwargs)  # Coiled takes scheduler_options beside ingress


def test_the_dask_kind_keeps_backend_options(sandbox, monkeypatch):
    monkeypatch.setitem(dask.config.config["coiled-jupyter"], "cluster-kind", "dask")
    session.set_settings(NEWER_PAGE)
    assert set(session.cluster_kwargs()) == {"backend_options", "use_scheduler_public_ip"}
