"""Our reading of the Dask config resolves the same coiled settings as ``dask.config`` does.

Over several files, YAML merge keys and anchors, and ``DASK_COILED__*`` variables, the config layer
holds what ``dask.config.collect`` yields for ``coiled.backend-options.ingress`` (the deprecated
``firewall`` where no ingress is set) and ``coiled.use_scheduler_public_ip``, or refuses with one
sentence naming the file; it never falls back to the built-in world-open default.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import dask.config
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coiled_jupyter.errors import ConfigFileError
from coiled_jupyter.rules import IngressError, parse_ingress
from coiled_jupyter.settings import (
    Layer,
    _config_search_paths,
    config_layer,
    effective_settings,
    parse_public_ip,
)

RESTRICTIVE = [{"ports": [8786], "cidr": "10.1.0.0/16"}]


def dask_sees(path: str, env: dict | None = None):
    """``path`` in the config ``dask.config.collect`` makes of this kernel's config folders."""
    merged = dask.config.collect(paths=_config_search_paths(), env=env or {})
    return dask.config.get(path, default=None, config=merged)


def refusal(call) -> str:
    with pytest.raises(ConfigFileError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_ingress_reached_through_a_merge_key_is_the_one_dask_sees(dask_config):
    (dask_config / "coiled.yaml").write_text(
        "team-rules: &r\n"
        "  ingress:\n"
        "    - {ports: [8786], cidr: 10.1.0.0/16}\n"
        "coiled:\n"
        "  backend-options: {<<: *r}\n"
    )
    assert dask_sees("coiled.backend-options.ingress") == RESTRICTIVE
    settings_now = effective_settings(account=lambda: None)
    assert settings_now.ingress.layer is Layer.CONFIG
    assert settings_now.rules == parse_ingress(RESTRICTIVE)
    assert settings_now.ingress.detail == str(dask_config / "coiled.yaml")


def test_a_coiled_mapping_merged_from_an_anchor_and_an_aliased_backend_options(dask_config):
    (dask_config / "a.yaml").write_text(
        "base: &c\n  use_scheduler_public_ip: false\n"
        "coiled:\n  <<: *c\n  backend_options: &bo\n    ingress: [{ports: [8786], cidr: 10.1.0.0/16}]\n"
    )
    (dask_config / "b.yaml").write_text("copy: &x {other: 1}\ncoiled:\n  <<: [*x]\n")
    layer = config_layer()
    assert layer.ingress == parse_ingress(dask_sees("coiled.backend-options.ingress"))
    assert layer.use_scheduler_public_ip is dask_sees("coiled.use_scheduler_public_ip") is False


def test_a_deprecated_firewall_in_a_later_file_leaves_the_earlier_ingress(dask_config):
    (dask_config / "a.yaml").write_text(
        "coiled:\n  backend-options:\n    ingress: [{ports: [8786], cidr: 10.1.0.0/16}]\n"
    )
    (dask_config / "b.yaml").write_text(
        "coiled:\n  backend-options:\n    firewall: {ports: [8786], cidr: 0.0.0.0/0}\n"
    )
    # Dask merges both into one backend-options; ingress wins over firewall, as everywhere.
    assert dask_sees("coiled.backend-options.ingress") == RESTRICTIVE
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # firewall is not used, so not warned about
        layer = config_layer()
    assert layer.ingress == parse_ingress(RESTRICTIVE)
    assert layer.ingress_detail == str(dask_config / "a.yaml")


def test_firewall_fields_from_two_files_are_merged_as_dask_merges_them(dask_config):
    (dask_config / "a.yaml").write_text(
        "coiled:\n  backend-options:\n    firewall: {ports: [22], cidr: 0.0.0.0/0}\n"
    )
    (dask_config / "b.yaml").write_text(
        "coiled:\n  backend-options:\n    firewall: {cidr: 10.1.0.0/16}\n"
    )
    with pytest.warns(FutureWarning):
        layer = config_layer()
    assert layer.ingress == parse_ingress([dask_sees("coiled.backend-options.firewall")])
    assert [str(rule) for rule in layer.ingress] == ["tcp 22 from 10.1.0.0/16"]
    assert str(dask_config / "a.yaml") in layer.ingress_detail
    assert str(dask_config / "b.yaml") in layer.ingress_detail


def test_a_null_in_a_later_file_that_unsets_rules_is_refused_naming_both(dask_config):
    (dask_config / "a.yaml").write_text(
        "coiled:\n  backend-options:\n    ingress: [{ports: [8786], cidr: 10.1.0.0/16}]\n"
    )
    (dask_config / "b.yaml").write_text("coiled:\n  backend-options:\n    ingress:\n")
    assert dask_sees("coiled.backend-options.ingress") is None  # Dask: Coiled's open default
    message = refusal(lambda: effective_settings(account=lambda: None))
    assert str(dask_config / "b.yaml") in message and str(dask_config / "a.yaml") in message


def test_a_null_variable_that_unsets_the_files_rules_is_refused(dask_config, monkeypatch):
    (dask_config / "a.yaml").write_text(
        "coiled:\n  backend-options:\n    ingress: [{ports: [8786], cidr: 10.1.0.0/16}]\n"
    )
    monkeypatch.setenv("DASK_COILED__BACKEND_OPTIONS__INGRESS", "None")
    assert "$DASK_COILED__BACKEND_OPTIONS__INGRESS" in refusal(config_layer)


@pytest.mark.parametrize(
    "text",
    ["coiled:\n  backend-options: [ingress]\n", "coiled: on\n", "coiled:\n  backend_options: x\n"],
)
def test_a_coiled_or_backend_options_that_is_not_a_mapping_is_refused(dask_config, text):
    (dask_config / "coiled.yaml").write_text(text)
    assert str(dask_config / "coiled.yaml") in refusal(config_layer)


@pytest.mark.parametrize(
    "text, problem",
    [
        (
            "coiled:\n  backend-options:\n    <<: 5\n",
            "merge key (<<) whose value is not a mapping",
        ),
        ("a: &a\n  <<: *a\ncoiled:\n  backend-options: {<<: *a}\n", "includes its own mapping"),
        (
            "b: &b {backend_options: {ingress: []}}\ncoiled:\n  <<: *b\n  backend-options: {}\n",
            "both",
        ),
        (
            "a: &a {ingress: []}\nb: &b {ingress: [{ports: [1], cidr: 0.0.0.0/0}]}\n"
            "coiled:\n  backend-options: {<<: [*a, *b]}\n",
            "from 2 mappings",
        ),
        (
            "base: &base {ports: [8786]}\ncoiled:\n  backend-options:\n    ingress:\n"
            "      - <<: *base\n        cidr: 10.1.0.0/16\n",
            "merge key",
        ),
        (
            "coiled:\n  backend-options:\n    ingress:\n      - <<: {ports: [8786]}\n"
            "        cidr: 10.1.0.0/16\n",
            "merge key",
        ),
    ],
)
def test_merge_keys_that_cannot_be_read_safely_are_refused_naming_the_file(
    dask_config, text, problem
):
    (dask_config / "coiled.yaml").write_text(text)
    message = refusal(config_layer)
    assert str(dask_config / "coiled.yaml") in message and problem in message


# --------------------------------------------------------------------------------------------------
# The property: generated config folders, our resolution against dask.config's own


_RULES = st.lists(
    st.fixed_dictionaries(
        {
            "ports": st.sampled_from([[8786], [8786, 8787], [22]]),
            "cidr": st.sampled_from(["10.1.0.0/16", "192.168.7.0/24", "0.0.0.0/0"]),
        }
    ),
    min_size=0,
    max_size=2,
)
_FIREWALL = st.one_of(
    st.fixed_dictionaries(
        {"ports": st.sampled_from([[22], [8786]]), "cidr": st.sampled_from(["10.9.0.0/16"])}
    ),
    st.fixed_dictionaries({"cidr": st.sampled_from(["10.8.0.0/16", "0.0.0.0/0"])}),
)
_ABSENT = "absent"
_FILE = st.fixed_dictionaries(
    {
        "ingress": st.one_of(st.just(_ABSENT), st.none(), _RULES),
        "firewall": st.one_of(st.just(_ABSENT), _FIREWALL),
        "toggle": st.sampled_from([_ABSENT, None, True, False]),
        "backend_key": st.sampled_from(["backend-options", "backend_options"]),
        "toggle_key": st.sampled_from(["use_scheduler_public_ip", "use-scheduler-public-ip"]),
        "style": st.sampled_from(
            ["plain", "merge", "merge-list", "merge-under-written", "alias", "coiled-merge"]
        ),
        "coiled_null": st.booleans(),
    }
)
_ENV = st.fixed_dictionaries(
    {},
    optional={
        "DASK_COILED__BACKEND_OPTIONS__INGRESS": st.one_of(st.just("None"), _RULES.map(repr)),
        "DASK_COILED__USE_SCHEDULER_PUBLIC_IP": st.sampled_from(["True", "False", "None"]),
        "DASK_COILED__BACKEND_OPTIONS__FIREWALL": _FIREWALL.map(repr),
    },
)


def _yaml_file(spec: dict) -> str:
    """One config file holding ``spec``'s values, written in ``spec["style"]``: directly, or through
    anchors, aliases and merge keys (values as JSON, which is YAML)."""
    if spec["coiled_null"]:
        return "coiled:\n"
    backend = {key: spec[key] for key in ("ingress", "firewall") if spec[key] is not _ABSENT}
    toggle = {} if spec["toggle"] is _ABSENT else {spec["toggle_key"]: spec["toggle"]}

    def flow(mapping: dict) -> str:
        return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in mapping.items()) + "}"

    backend_key, style = spec["backend_key"], spec["style"]
    if style == "plain":
        return f"coiled:\n  {backend_key}: {flow(backend)}\n" + "".join(
            f"  {k}: {json.dumps(v)}\n" for k, v in toggle.items()
        )
    if style == "merge":
        return f"team: &t {flow(backend)}\ncoiled:\n  {backend_key}: {{<<: *t}}\n" + "".join(
            f"  {k}: {json.dumps(v)}\n" for k, v in toggle.items()
        )
    if style == "merge-list":
        # The second mapping adds what the first does not set (a key in both is refused).
        decoy = (
            {"firewall": {"ports": [22], "cidr": "0.0.0.0/0"}}
            if "firewall" not in backend
            else {"region": "x"}
        )
        return (
            f"first: &f {flow(backend)}\nsecond: &s {flow(decoy)}\n"
            f"coiled:\n  {backend_key}:\n    <<: [*f, *s]\n    region: x\n"
            + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in toggle.items())
        )
    if style == "merge-under-written":
        wide = {
            "ingress": [{"ports": [8786], "cidr": "0.0.0.0/0"}],
            "firewall": {"ports": [22], "cidr": "0.0.0.0/0"},
        }
        written = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in backend.items())
        return f"wide: &w {flow(wide)}\ncoiled:\n  {backend_key}:\n    <<: *w\n{written}" + "".join(
            f"  {k}: {json.dumps(v)}\n" for k, v in toggle.items()
        )
    if style == "alias":
        return (
            f"elsewhere:\n  options: &bo {flow(backend)}\ncoiled:\n  {backend_key}: *bo\n"
            + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in toggle.items())
        )
    # coiled-merge: the whole coiled mapping comes through a merge key
    inner = {backend_key: backend, **toggle}
    return f"defaults: &d {flow(inner)}\ncoiled: {{<<: *d, token: abc}}\n"


def _expected(env: dict):
    """What Dask resolves for our keys (ingress over firewall, as everywhere), and whether a null
    unsets a value a weaker source sets (which we refuse)."""
    search = _config_search_paths()

    def get(path: str, config: dict):
        return dask.config.get(path, default=None, config=config)

    everything = dask.config.collect(paths=search, env=env)
    alone = [dask.config.collect(paths=[p], env={}) for p in _files(search)]
    alone.append(dask.config.collect(paths=[], env=env))
    ingress = get("coiled.backend-options.ingress", everything)
    firewall = get("coiled.backend-options.firewall", everything)
    toggle = get("coiled.use_scheduler_public_ip", everything)

    def set_somewhere(path: str) -> bool:
        return any(get(path, config) is not None for config in alone)

    unset = (
        (ingress is None and set_somewhere("coiled.backend-options.ingress"))
        or (
            ingress is None
            and firewall is None
            and set_somewhere("coiled.backend-options.firewall")
        )
        or (toggle is None and set_somewhere("coiled.use_scheduler_public_ip"))
    )
    return ingress, firewall, toggle, unset


def _files(search: list[str]) -> list[str]:
    found = []
    for place in search:
        if os.path.isdir(place):
            found += sorted(
                os.path.join(place, name)
                for name in os.listdir(place)
                if os.path.splitext(name)[1] in (".yaml", ".yml", ".json")
            )
    return found


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=st.lists(_FILE, min_size=1, max_size=3), env=_ENV, data=st.data())
def test_our_resolution_is_dasks_over_generated_config_folders(
    dask_config, tmp_path_factory, files, env, data
):
    folder = tmp_path_factory.mktemp("generated-dask-config")
    for index, spec in enumerate(files):
        (folder / f"{index:02d}-coiled.yaml").write_text(_yaml_file(spec))
    saved = {name: os.environ.get(name) for name in (*env, "DASK_CONFIG")}
    os.environ.update(env)
    os.environ["DASK_CONFIG"] = str(folder)
    try:
        ingress, firewall, toggle, unset = _expected(env)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            _check_one_folder(folder, env, ingress, firewall, toggle, unset)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_one_folder(folder: Path, env: dict, ingress, firewall, toggle, unset) -> None:
    if unset:
        message = refusal(config_layer)
        assert str(folder) in message or any(f"${name}" in message for name in env)
        return
    try:
        rules = (
            parse_ingress(ingress)
            if ingress is not None
            else parse_ingress([firewall])
            if firewall is not None
            else None
        )
    except IngressError:
        with pytest.raises(IngressError):
            config_layer()
        return
    try:
        public_ip = None if toggle is None else parse_public_ip(toggle)
    except IngressError:
        with pytest.raises(IngressError):
            config_layer()
        return
    layer = config_layer()
    assert layer.ingress == rules
    assert layer.use_scheduler_public_ip is public_ip
    if rules is not None:
        assert layer.ingress_detail
