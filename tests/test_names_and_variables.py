"""Names are validated where they enter; ``${name}`` inserts one value, never options or lines.

On the old code ``--cluster "${name}"`` with ``name = ""`` destroyed the default cluster's group, and
a variable holding ``"...\\n--cluster x"`` added options.
"""

from __future__ import annotations

import shlex

import pytest
from IPython.core.error import UsageError

from coiled_jupyter.errors import CoiledJupyterError
from coiled_jupyter.magics import substitute, substitute_yaml
from coiled_jupyter.provision.target import target, validate_target
from coiled_jupyter.settings import SESSION


@pytest.fixture
def ip(ip, dask_config):
    """conftest's shell, with a Dask config folder of this test's own."""
    return ip


@pytest.mark.parametrize("name", ["", " ", "\t", "  \n"])
def test_a_blank_cluster_name_is_an_error_never_the_default(name):
    with pytest.raises(CoiledJupyterError, match="empty"):
        validate_target(name)


@pytest.mark.parametrize("quoted", ['"${name}"', "'${name}'", "${name}", "=${name}"])
def test_destroy_with_an_empty_name_keeps_the_default_clusters_group(ip, sandbox, cloud, quoted):
    ip.run_line_magic("coiled_ingress", "apply")  # the default cluster's group
    default = target().cluster
    group = cloud.ec2.describe_security_groups(
        Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": [default]}]
    )["SecurityGroups"]
    assert group
    ip.user_ns["name"] = ""
    option = f"--cluster{quoted}" if quoted.startswith("=") else f"--cluster {quoted}"
    with pytest.raises(UsageError, match="empty"):
        ip.run_line_magic("coiled_ingress", f"destroy {option}")
    after = cloud.ec2.describe_security_groups(GroupIds=[group[0]["GroupId"]])["SecurityGroups"]
    assert after


@pytest.mark.parametrize(
    "value",
    [
        "x\n--cluster prod",
        "x --cluster prod",
        "x' --cluster 'prod",
        'x" --cluster "prod',
        "--cluster=prod",
        "-c prod",
        "x\\",
    ],
)
@pytest.mark.parametrize("quoted", ['"${v}"', "'${v}'", "${v}"])
def test_a_value_in_a_line_is_one_word_or_refused(value, quoted):
    ns = {"v": value}
    try:
        line = substitute(f"add 8786 10.0.0.0/8 --description {quoted}", ns, "the line")
    except UsageError as error:
        assert "control character" in str(error) or "starts with '-'" in str(error)
        return
    words = shlex.split(line)
    assert words[:4] == ["add", "8786", "10.0.0.0/8", "--description"]
    assert words[4:] == [value]


def test_a_variable_cannot_add_options_to_a_magic(ip, sandbox):
    ip.user_ns["office"] = "10.1.0.0/16 --cluster other"
    before = SESSION.values
    with pytest.raises(UsageError, match="cidr '10.1.0.0/16 --cluster other'"):
        ip.run_line_magic("coiled_ingress", "add 8786 ${office}")
    assert SESSION.values == before


@pytest.mark.parametrize(
    "value",
    [
        "10.0.0.0/8\n- ports: [22]\n  cidr: 0.0.0.0/0",
        "10.0.0.0/8}, {ports: [22], cidr: 0.0.0.0/0",
        "10.0.0.0/8, ports: [22]",
    ],
)
def test_a_value_in_a_cell_cannot_add_rules_or_lines(ip, sandbox, value):
    ip.user_ns["net"] = value
    before = SESSION.values
    for body in ("- ports: [8786]\n  cidr: ${net}\n", "[{ports: [8786], cidr: ${net}}]"):
        with pytest.raises(UsageError):
            ip.run_cell_magic("coiled_ingress", "", body)
        with pytest.raises(UsageError):
            ip.run_line_magic("coiled_ingress", f"set {body.splitlines()[0]}")
    assert SESSION.values == before


def test_whole_values_and_values_inside_text_in_yaml():
    ns = {"rules": [{"ports": [8786], "cidr": "10.1.0.0/16"}], "port": 8787, "who": "lab 3"}
    data = substitute_yaml("ingress: ${rules}\nnote: ${who} at $$5, port ${port}\n", ns, "x")
    assert data == {"ingress": ns["rules"], "note": "lab 3 at $5, port 8787"}
    quoted = substitute_yaml("a: \"${who}\"\nb: '${who}'\n", ns, "x")
    assert quoted == {"a": "lab 3", "b": "lab 3"}
    with pytest.raises(UsageError, match="only stand as a whole value"):
        substitute_yaml("a: x ${rules}", ns, "x")
    with pytest.raises(UsageError, match="twice once its variables are inserted"):
        substitute_yaml("${who}: 1\nlab 3: 2\n", ns, "x")
