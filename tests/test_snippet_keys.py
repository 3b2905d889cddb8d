"""Every key a pasted snippet holds is used or refused: none is accepted and then dropped.

A top-level ``ingress:`` beside a ``coiled:`` snippet was accepted, only the toggle kept, and the rules
stayed world-open. Each key that is not used is now one sentence naming the key and where it belongs,
and nothing changes (cell magic, ``set_settings``, ``set_and_apply``).
"""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from coiled_jupyter import session
from coiled_jupyter.rules import IngressError
from coiled_jupyter.settings import SESSION, parse_coiled_options

COILED = "coiled:\n  use_scheduler_public_ip: false\n"
RULES = "  - {ports: [8786], cidr: 10.1.0.0/16}\n"


@pytest.mark.parametrize(
    "text, key, belongs",
    [
        (COILED + "ingress:\n" + RULES, "'ingress'", "coiled.backend-options"),
        (COILED + "backend-options:\n  ingress:\n" + RULES, "'backend-options'", "under coiled"),
        (
            "coiled:\n  backend-options: {ingress: []}\nuse_scheduler_public_ip: false\n",
            "'use_scheduler_public_ip'",
            "under coiled",
        ),
        (
            COILED + "distributed:\n  comm: {timeouts: {connect: 5s}}\n",
            "'distributed'",
            "Dask config",
        ),
        (COILED + "  token: abc\n", "'token'", "Dask config file"),
        (COILED + "  ingress:\n  " + RULES, "'ingress'", "coiled.backend-options"),
        (
            "coiled:\n  backend-options:\n    region: us-east-2\n    ingress: []\n",
            "'region'",
            "backend_options=",
        ),
        (
            "coiled:\n  backend-options:\n    ingress: []\n"
            "    firewall: {ports: [22], cidr: 0.0.0.0/0}\n",
            "'firewall'",
            "only ingress is used",
        ),
    ],
)
def test_a_key_that_would_not_be_used_is_refused_naming_it_and_where_it_belongs(
    dask_config, text, key, belongs
):
    before = SESSION.values
    with pytest.raises(IngressError) as caught:
        session.set_settings(text, label="the cell")
    [problem] = caught.value.problems
    assert key in problem and belongs in problem and "the cell" in problem
    assert "\n" not in problem
    assert SESSION.values == before


def test_the_cell_magic_refuses_top_level_ingress_beside_coiled(ip, dask_config):
    before = SESSION.values
    with pytest.raises(UsageError, match="'ingress' beside 'coiled'"):
        ip.run_cell_magic("coiled_ingress", "", COILED + "ingress:\n" + RULES)
    assert SESSION.values == before


def test_python_values_are_held_to_the_same_rule(dask_config):
    with pytest.raises(IngressError, match="'ingress' beside 'coiled'"):
        parse_coiled_options(
            {"coiled": {"use_scheduler_public_ip": False}, "ingress": [{"ports": [1], "cidr": "x"}]}
        )
