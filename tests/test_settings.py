"""Settings layers, their resolution with origins, the session layer and its Dask config mirror.

The Dask config layer is exercised with real files in a temporary ``DASK_CONFIG`` folder and real
``DASK_COILED__*`` environment variables; nothing inside Dask is patched. The account layer (kept in
SSM, tested elsewhere) is always injected with ``account=``.
"""

from __future__ import annotations

import itertools
import os
import textwrap
import warnings
from pathlib import Path

import dask.config
import pytest
import yaml

from coiled_jupyter import session
from coiled_jupyter.rules import IngressError, Rule, parse_ingress, to_coiled
from coiled_jupyter.settings import (
    BUILT_IN_DEFAULT,
    SESSION,
    Layer,
    LayerValues,
    config_layer,
    effective_settings,
    layer_from_options,
    parse_public_ip,
)

ACCOUNT_ORIGIN = "ssm:/coiled-jupyter/account-defaults"
INGRESS_ENV = "DASK_COILED__BACKEND_OPTIONS__INGRESS"
FIREWALL_ENV = "DASK_COILED__BACKEND_OPTIONS__FIREWALL"
PUBLIC_IP_ENV = "DASK_COILED__USE_SCHEDULER_PUBLIC_IP"
MISSING = object()

# A different rule list per layer, so that the winner is plain and a merge would show.
INGRESS = {
    Layer.DEFAULT: BUILT_IN_DEFAULT["ingress"],
    Layer.ACCOUNT: [{"ports": [8786], "cidr": "10.1.0.0/16"}],
    Layer.CONFIG: [{"ports": [8786, 8787], "cidr": "10.2.0.0/16"}],
    Layer.SESSION: [{"ports": [8787], "cidr": "10.3.0.0/16"}, {"ports": [22], "cidr": "me"}],
    Layer.CLUSTER: [{"ports": ["9000-9001"], "cidr": "2001:db8::/32"}],
}
LAYER_PAIRS = list(itertools.combinations(list(Layer), 2))
PAIR_IDS = [f"{low.name}<{high.name}" for low, high in LAYER_PAIRS]


pytestmark = pytest.mark.usefixtures("dask_config")


def write_config(folder: Path, text: str, name: str = "coiled.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def write_coiled_config(
    folder: Path,
    ingress=MISSING,
    public_ip=MISSING,
    *,
    name: str = "coiled.yaml",
    spelling: str = "backend_options",
) -> Path:
    coiled: dict = {"token": "abc123-secret"}
    if ingress is not MISSING:
        coiled[spelling] = {"ingress": ingress}
    if public_ip is not MISSING:
        coiled["use_scheduler_public_ip"] = public_ip
    path = folder / name
    path.write_text(yaml.safe_dump({"coiled": coiled}))
    return path


def account_layer(ingress=None, public_ip=None):
    rules = parse_ingress(ingress) if ingress is not None else None
    return lambda: LayerValues(
        Layer.ACCOUNT,
        rules,
        public_ip,
        ACCOUNT_ORIGIN if rules is not None else "",
        ACCOUNT_ORIGIN if public_ip is not None else "",
    )


def resolve_with(folder: Path, values: dict[Layer, dict]):
    """Set each layer's values where that layer really lives, then resolve every layer.

    ``values[layer]`` may hold ``ingress`` and ``use_scheduler_public_ip``; the built-in default is
    always there. Returns the settings and the expected origin of each layer.
    """
    origins = {
        Layer.DEFAULT: "",
        Layer.ACCOUNT: ACCOUNT_ORIGIN,
        Layer.SESSION: "this kernel",
        Layer.CLUSTER: "backend_options",
        Layer.CONFIG: "",
    }
    account = values.get(Layer.ACCOUNT, {})
    config = values.get(Layer.CONFIG)
    if config is not None:
        path = write_coiled_config(
            folder, config.get("ingress", MISSING), config.get("use_scheduler_public_ip", MISSING)
        )
        origins[Layer.CONFIG] = str(path)
    if Layer.SESSION in values:
        session.set_settings(values[Layer.SESSION])
    result = effective_settings(
        values.get(Layer.CLUSTER),
        account=account_layer(account.get("ingress"), account.get("use_scheduler_public_ip")),
    )
    return result, origins


def assert_from(resolved, layer: Layer, origin: str):
    assert resolved.layer is layer
    assert resolved.detail == origin
    expected = f"{layer.label} ({origin})" if origin else layer.label
    assert resolved.origin == expected


# --------------------------------------------------------------------------------------------------
# Precedence of every pair of layers


def test_built_in_default_alone(dask_config):
    result = effective_settings(account=lambda: None)
    assert result.rules == parse_ingress(BUILT_IN_DEFAULT["ingress"])
    assert result.use_scheduler_public_ip.value is True
    assert_from(result.ingress, Layer.DEFAULT, "")
    assert_from(result.use_scheduler_public_ip, Layer.DEFAULT, "")
    assert result.ingress.origin == "built-in default"
    assert [values.layer for values in result.layers] == list(Layer)


@pytest.mark.parametrize("low, high", LAYER_PAIRS, ids=PAIR_IDS)
def test_stronger_layer_wins_ingress_as_a_whole(dask_config, low, high):
    values = {layer: {"ingress": INGRESS[layer]} for layer in (low, high) if layer != Layer.DEFAULT}
    result, origins = resolve_with(dask_config, values)
    # Replaced, not merged: exactly the stronger layer's list.
    assert result.rules == parse_ingress(INGRESS[high])
    assert_from(result.ingress, high, origins[high])
    # Nobody set the toggle: it stays the default, on its own.
    assert result.use_scheduler_public_ip.value is True
    assert_from(result.use_scheduler_public_ip, Layer.DEFAULT, "")


@pytest.mark.parametrize("low, high", LAYER_PAIRS, ids=PAIR_IDS)
def test_stronger_layer_wins_the_public_ip_toggle(dask_config, low, high):
    # The default says True, so the weaker layer says False and the stronger one says True again;
    # the origin tells the stronger layer from the default.
    values = {}
    if low != Layer.DEFAULT:
        values[low] = {"use_scheduler_public_ip": False}
    values[high] = {"use_scheduler_public_ip": low != Layer.DEFAULT}
    result, origins = resolve_with(dask_config, values)
    assert result.use_scheduler_public_ip.value is (low != Layer.DEFAULT)
    assert_from(result.use_scheduler_public_ip, high, origins[high])
    assert result.rules == parse_ingress(BUILT_IN_DEFAULT["ingress"])
    assert_from(result.ingress, Layer.DEFAULT, "")


@pytest.mark.parametrize("low, high", LAYER_PAIRS, ids=PAIR_IDS)
def test_toggle_from_a_stronger_layer_leaves_ingress_from_a_weaker_one(dask_config, low, high):
    values = {high: {"use_scheduler_public_ip": False}}
    if low != Layer.DEFAULT:
        values[low] = {"ingress": INGRESS[low], "use_scheduler_public_ip": True}
    result, origins = resolve_with(dask_config, values)
    assert result.rules == parse_ingress(INGRESS[low])
    assert_from(result.ingress, low, origins[low])
    assert result.use_scheduler_public_ip.value is False
    assert_from(result.use_scheduler_public_ip, high, origins[high])


@pytest.mark.parametrize("low, high", LAYER_PAIRS, ids=PAIR_IDS)
def test_ingress_from_a_stronger_layer_leaves_the_toggle_from_a_weaker_one(dask_config, low, high):
    values = {high: {"ingress": INGRESS[high]}}
    expected_toggle = True
    if low != Layer.DEFAULT:
        values[low] = {"ingress": INGRESS[low], "use_scheduler_public_ip": False}
        expected_toggle = False
    result, origins = resolve_with(dask_config, values)
    assert result.rules == parse_ingress(INGRESS[high])
    assert_from(result.ingress, high, origins[high])
    assert result.use_scheduler_public_ip.value is expected_toggle
    assert_from(result.use_scheduler_public_ip, low, origins[low])


def test_all_layers_at_once_the_cluster_wins(dask_config):
    values = {
        layer: {"ingress": INGRESS[layer], "use_scheduler_public_ip": layer % 2 == 0}
        for layer in Layer
        if layer != Layer.DEFAULT
    }
    result, origins = resolve_with(dask_config, values)
    assert result.rules == parse_ingress(INGRESS[Layer.CLUSTER])
    assert_from(result.ingress, Layer.CLUSTER, "backend_options")
    assert result.use_scheduler_public_ip.value is True
    assert result.ingress.origin == "cluster options (backend_options)"
    # Every layer that was consulted is kept, weakest first, each with what it said.
    by_layer = {values.layer: values for values in result.layers}
    assert list(by_layer) == list(Layer)
    assert by_layer[Layer.CONFIG].ingress == parse_ingress(INGRESS[Layer.CONFIG])
    assert by_layer[Layer.SESSION].ingress_detail == "this kernel"


def test_an_empty_list_in_a_stronger_layer_means_no_rules(dask_config):
    write_coiled_config(dask_config, INGRESS[Layer.CONFIG])
    session.clear()
    result = effective_settings(account=account_layer(INGRESS[Layer.ACCOUNT]))
    assert result.rules == []
    assert_from(result.ingress, Layer.SESSION, "this kernel")


def test_session_origin(dask_config):
    session.set_settings({"ingress": INGRESS[Layer.SESSION], "use_scheduler_public_ip": "private"})
    result = effective_settings(account=lambda: None)
    assert result.ingress.origin == "notebook session (this kernel)"
    assert result.use_scheduler_public_ip.origin == "notebook session (this kernel)"
    assert result.use_scheduler_public_ip.value is False


def test_account_provenance(dask_config):
    result = effective_settings(account=account_layer(INGRESS[Layer.ACCOUNT], False))
    assert result.ingress.origin == f"account default ({ACCOUNT_ORIGIN})"
    assert result.use_scheduler_public_ip.origin == f"account default ({ACCOUNT_ORIGIN})"


def test_an_account_loader_that_finds_nothing(dask_config):
    result = effective_settings(account=lambda: None)
    assert result.ingress.layer is Layer.DEFAULT
    assert result.layers[Layer.ACCOUNT] == LayerValues(Layer.ACCOUNT)


# --------------------------------------------------------------------------------------------------
# The Dask config layer: real files and real environment variables


def test_config_file_in_dask_config_folder_is_read(dask_config):
    path = write_config(
        dask_config,
        """\
        # written by coiled login
        coiled:
          token: "abc123-secret"
          backend_options:
            ingress:
              - ports: [8786, 8787]
                cidr: 10.1.0.0/16
              - ports: [8786]
                cidr: 10.2.0.0/16
          use_scheduler_public_ip: false
        """,
    )
    layer = config_layer()
    assert layer.ingress == parse_ingress(
        [{"ports": [8786, 8787], "cidr": "10.1.0.0/16"}, {"ports": [8786], "cidr": "10.2.0.0/16"}]
    )
    assert layer.use_scheduler_public_ip is False
    assert layer.ingress_detail == layer.public_ip_detail == str(path)


def test_config_file_with_the_hyphen_spelling(dask_config):
    path = write_coiled_config(dask_config, INGRESS[Layer.CONFIG], spelling="backend-options")
    result = effective_settings(account=lambda: None)
    assert result.rules == parse_ingress(INGRESS[Layer.CONFIG])
    assert result.ingress.origin == f"dask config ({path})"


def test_config_layer_agrees_with_dasks_own_merge(dask_config, monkeypatch):
    write_coiled_config(dask_config, INGRESS[Layer.CONFIG], False, name="a-team.yaml")
    write_coiled_config(dask_config, INGRESS[Layer.ACCOUNT], name="coiled.yaml")
    monkeypatch.setenv(PUBLIC_IP_ENV, "True")
    merged = dask.config.collect([str(dask_config)], env=os.environ)
    layer = config_layer()
    assert to_coiled(layer.ingress) == to_coiled(
        parse_ingress(merged["coiled"]["backend_options"]["ingress"])
    )
    assert layer.use_scheduler_public_ip is merged["coiled"]["use_scheduler_public_ip"] is True


def test_later_file_in_the_folder_wins(dask_config):
    write_coiled_config(dask_config, INGRESS[Layer.CONFIG], False, name="a-team.yaml")
    later = write_coiled_config(dask_config, INGRESS[Layer.ACCOUNT], name="coiled.yaml")
    layer = config_layer()
    assert layer.ingress == parse_ingress(INGRESS[Layer.ACCOUNT])
    assert layer.ingress_detail == str(later)
    assert layer.use_scheduler_public_ip is False
    assert layer.public_ip_detail == str(dask_config / "a-team.yaml")


def test_environment_variable_sets_ingress(dask_config, monkeypatch):
    monkeypatch.setenv(INGRESS_ENV, "[{'ports': [8786], 'cidr': '10.9.0.0/16'}]")
    result = effective_settings(account=lambda: None)
    assert result.rules == [Rule("tcp", 8786, 8786, "10.9.0.0/16")]
    assert_from(result.ingress, Layer.CONFIG, f"${INGRESS_ENV}")
    assert result.ingress.origin == f"dask config (${INGRESS_ENV})"


def test_environment_beats_files_inside_the_config_layer(dask_config, monkeypatch):
    path = write_coiled_config(dask_config, INGRESS[Layer.CONFIG], True)
    monkeypatch.setenv(INGRESS_ENV, "[{'ports': [8786], 'cidr': '10.9.0.0/16'}]")
    result = effective_settings(account=lambda: None)
    assert result.rules == [Rule("tcp", 8786, 8786, "10.9.0.0/16")]
    assert_from(result.ingress, Layer.CONFIG, f"${INGRESS_ENV}")
    # the toggle is only in the file, so it still comes from the file
    assert_from(result.use_scheduler_public_ip, Layer.CONFIG, str(path))


def test_environment_toggle_beats_the_file_toggle(dask_config, monkeypatch):
    path = write_coiled_config(dask_config, INGRESS[Layer.CONFIG], True)
    monkeypatch.setenv(PUBLIC_IP_ENV, "False")
    layer = config_layer()
    assert layer.use_scheduler_public_ip is False
    assert layer.public_ip_detail == f"${PUBLIC_IP_ENV}"
    assert layer.ingress_detail == str(path)


@pytest.mark.parametrize(
    "text, expected",
    [("False", False), ("false", False), ("private", False), ("True", True), ("public", True)],
)
def test_environment_toggle_spellings(dask_config, monkeypatch, text, expected):
    monkeypatch.setenv(PUBLIC_IP_ENV, text)
    assert config_layer().use_scheduler_public_ip is expected


def test_session_beats_the_environment(dask_config, monkeypatch):
    monkeypatch.setenv(INGRESS_ENV, "[{'ports': [8786], 'cidr': '10.9.0.0/16'}]")
    session.set_scheduler_ip(False)
    result = effective_settings(account=lambda: None)
    assert_from(result.ingress, Layer.CONFIG, f"${INGRESS_ENV}")
    assert_from(result.use_scheduler_public_ip, Layer.SESSION, "this kernel")


def test_a_saved_file_shows_at_once(dask_config):
    assert effective_settings(account=lambda: None).ingress.layer is Layer.DEFAULT
    write_coiled_config(dask_config, INGRESS[Layer.CONFIG])
    assert effective_settings(account=lambda: None).ingress.layer is Layer.CONFIG
    (dask_config / "coiled.yaml").unlink()
    assert effective_settings(account=lambda: None).ingress.layer is Layer.DEFAULT


def test_unrelated_files_and_variables_do_not_set_anything(dask_config, monkeypatch):
    write_config(dask_config, "distributed:\n  scheduler:\n    allowed-failures: 5\n", "dask.yaml")
    write_config(dask_config, "coiled:\n  token: abc\n  backend_options:\n    region: us-east-1\n")
    monkeypatch.setenv("DASK_COILED__ACCOUNT", "team")
    layer = config_layer()
    assert layer == LayerValues(Layer.CONFIG)


# --------------------------------------------------------------------------------------------------
# Deprecated ``firewall``


FIREWALL = {"ports": [22, 8786], "cidr": "10.5.0.0/16"}


def test_deprecated_firewall_in_a_config_file(dask_config):
    path = write_config(
        dask_config,
        """\
        coiled:
          backend_options:
            firewall:
              ports: [22, 8786]
              cidr: 10.5.0.0/16
        """,
    )
    with pytest.warns(FutureWarning, match="'firewall' in dask config .* is deprecated"):
        result = effective_settings(account=lambda: None)
    assert result.rules == parse_ingress([FIREWALL])
    assert_from(result.ingress, Layer.CONFIG, str(path))


def test_deprecated_firewall_in_an_environment_variable(dask_config, monkeypatch):
    monkeypatch.setenv(FIREWALL_ENV, repr(FIREWALL))
    with pytest.warns(FutureWarning, match="deprecated"):
        layer = config_layer()
    assert layer.ingress == parse_ingress([FIREWALL])
    assert layer.ingress_detail == f"${FIREWALL_ENV}"


def test_deprecated_firewall_in_cluster_options(dask_config):
    with pytest.warns(FutureWarning, match="ingress="):
        result = effective_settings({"firewall": FIREWALL}, account=lambda: None)
    assert result.rules == parse_ingress([FIREWALL])
    assert_from(result.ingress, Layer.CLUSTER, "backend_options")


def test_ingress_wins_over_firewall_in_the_same_place(dask_config):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning: firewall is not used
        values = layer_from_options(
            Layer.CLUSTER, {"ingress": INGRESS[Layer.CLUSTER], "firewall": FIREWALL}
        )
    assert values.ingress == parse_ingress(INGRESS[Layer.CLUSTER])


def test_a_bad_deprecated_firewall_names_it(dask_config):
    with pytest.warns(FutureWarning), pytest.raises(IngressError) as caught:
        layer_from_options(
            Layer.CLUSTER, {"firewall": {"ports": [0], "cidr": "10.0.0.0/8"}}, "backend_options"
        )
    assert caught.value.problems[0].startswith(
        "firewall in cluster options backend_options rule has port 0"
    )


# --------------------------------------------------------------------------------------------------
# Bad values name where they came from


def test_bad_ingress_in_a_config_file_names_the_file(dask_config):
    path = write_coiled_config(dask_config, [{"ports": [8786], "cidr": "10.1.0.2/16"}])
    with pytest.raises(IngressError) as caught:
        effective_settings(account=lambda: None)
    [problem] = caught.value.problems
    assert str(path) in problem
    assert problem.startswith(f"ingress in dask config {path} rule has cidr '10.1.0.2/16'")
    assert "did you mean '10.1.0.0/16'" in problem


def test_bad_ingress_in_an_environment_variable_names_the_variable(dask_config, monkeypatch):
    monkeypatch.setenv(INGRESS_ENV, "[{'ports': [70000], 'cidr': '10.9.0.0/16'}]")
    with pytest.raises(IngressError) as caught:
        config_layer()
    [problem] = caught.value.problems
    assert f"${INGRESS_ENV}" in problem
    assert "port 70000, outside 1-65535" in problem


def test_bad_toggle_in_an_environment_variable_names_the_variable(dask_config, monkeypatch):
    path = write_coiled_config(dask_config, INGRESS[Layer.CONFIG])
    monkeypatch.setenv(PUBLIC_IP_ENV, "maybe")
    with pytest.raises(IngressError) as caught:
        config_layer()
    [problem] = caught.value.problems
    assert f"${PUBLIC_IP_ENV}" in problem
    assert str(path) not in problem
    assert "'maybe'" in problem


def test_bad_toggle_in_a_file_names_the_file(dask_config, monkeypatch):
    path = write_coiled_config(dask_config, public_ip="sometimes")
    monkeypatch.setenv(INGRESS_ENV, "[{'ports': [8786], 'cidr': '10.9.0.0/16'}]")
    with pytest.raises(IngressError) as caught:
        config_layer()
    [problem] = caught.value.problems
    assert problem.startswith(f"use_scheduler_public_ip in dask config {path} is 'sometimes'")


def test_bad_cluster_options_name_backend_options(dask_config):
    with pytest.raises(IngressError) as caught:
        effective_settings({"ingress": [{"ports": [8786], "cidr": 10}]}, account=lambda: None)
    assert caught.value.problems[0].startswith("ingress in cluster options backend_options rule")


# --------------------------------------------------------------------------------------------------
# parse_public_ip


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True),
        (False, False),
        ("public", True),
        ("private", False),
        (" Public ", True),
        ("PRIVATE", False),
        ("true", True),
        ("false", False),
    ],
)
def test_parse_public_ip_accepts_booleans_and_words(value, expected):
    assert parse_public_ip(value) is expected


@pytest.mark.parametrize("value", [1, 0, None, "", "maybe", "on", 1.0, [True]])
def test_parse_public_ip_refuses_other_values_with_a_sentence(value):
    with pytest.raises(IngressError) as caught:
        parse_public_ip(value, where="%coiled_scheduler_ip")
    [problem] = caught.value.problems
    assert problem == (
        f"%coiled_scheduler_ip is {value!r}; use true (connect on the scheduler's "
        "public IP) or false (its private IP)."
    )


# --------------------------------------------------------------------------------------------------
# The session layer and its mirror in this kernel's Dask config


def mirrored_public_ip(default=MISSING):
    return dask.config.get("coiled.use_scheduler_public_ip", default=default)


def test_the_session_toggle_is_the_one_key_set_in_dask_config(dask_config):
    """Coiled's client reads coiled.use_scheduler_public_ip from Dask config and never applies
    coiled.backend-options from there, so the session sets only the toggle."""
    session.set_settings({"ingress": INGRESS[Layer.SESSION], "use_scheduler_public_ip": False})
    assert mirrored_public_ip() is False
    assert dask.config.get("coiled.backend-options.ingress", default=MISSING) is MISSING


def test_rules_alone_leave_coiled_own_toggle_alone(dask_config):
    dask.config.set({"coiled.use_scheduler_public_ip": False})
    session.add(8786, "10.1.0.0/16")
    session.clear()
    assert mirrored_public_ip() is False


def test_reset_puts_back_the_toggle_that_was_there(dask_config):
    dask.config.set({"coiled.use_scheduler_public_ip": False})
    session.set_scheduler_ip("public")
    assert mirrored_public_ip() is True
    session.reset()
    assert mirrored_public_ip() is False


def test_reset_drops_a_toggle_that_was_not_there(dask_config):
    session.set_scheduler_ip("private")
    session.set_scheduler_ip("public")
    session.reset()
    assert mirrored_public_ip() is MISSING


def test_the_toggle_mirror_keeps_the_spelling_already_in_dask_config(dask_config):
    dask.config.config["coiled"] = {"use-scheduler-public-ip": True, "region": "us-east-1"}
    session.set_scheduler_ip("private")
    assert dask.config.config["coiled"] == {
        "use-scheduler-public-ip": False,
        "region": "us-east-1",
    }
    session.reset()
    assert dask.config.config["coiled"] == {"use-scheduler-public-ip": True, "region": "us-east-1"}


def test_a_bad_session_value_changes_nothing(dask_config):
    session.set_settings({"ingress": INGRESS[Layer.SESSION], "use_scheduler_public_ip": True})
    before = (SESSION.values, mirrored_public_ip())
    with pytest.raises(IngressError, match="did you mean '10.1.0.0/16'"):
        session.set_settings(
            {
                "ingress": [{"ports": [8786], "cidr": "10.1.0.2/16"}],
                "use_scheduler_public_ip": False,
            }
        )
    with pytest.raises(IngressError, match="'sometimes'"):
        session.set_settings(
            {"ingress": INGRESS[Layer.CONFIG], "use_scheduler_public_ip": "sometimes"}
        )
    assert (SESSION.values, mirrored_public_ip()) == before


def test_the_session_layer_reports_what_it_sets(dask_config):
    session.set_settings({"ingress": INGRESS[Layer.SESSION], "use_scheduler_public_ip": False})
    rules = parse_ingress(INGRESS[Layer.SESSION])
    assert SESSION.layer() == LayerValues(Layer.SESSION, rules, False, "this kernel", "this kernel")
    session.reset()
    assert SESSION.layer() == LayerValues(Layer.SESSION)
