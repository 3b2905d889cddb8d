"""A notebook variable or API value nested thousands deep is one sentence, never a RecursionError.

``${var}`` holding a list nested 3,000 deep reached ``json.dumps`` (a line) or ``str()`` (a
did-you-mean) and ended in a RecursionError traceback; Python values are now bounded by the limits
of a text (depth and count) before anything walks them.
"""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from coiled_jupyter import session
from coiled_jupyter.rules import IngressError
from coiled_jupyter.settings import SESSION


def nested(depth: int) -> list:
    outer: list = []
    inner = outer
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return outer


def holds_itself() -> list:
    loop: list = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize("value", [nested(3000), holds_itself()], ids=["3000-deep", "cycle"])
@pytest.mark.parametrize(
    "kind, magic, text",
    [
        ("line", "coiled_ingress", "add ${deep} 10.0.0.0/8"),
        ("line", "coiled_scheduler_ip", "${deep}"),
        ("cell", "coiled_ingress", "ingress: ${deep}\n"),
        ("line", "coiled_ingress", "set ${deep}"),
    ],
)
def test_a_deep_variable_is_one_sentence(ip, dask_config, value, kind, magic, text):
    ip.user_ns["deep"] = value
    before = SESSION.values
    with pytest.raises(UsageError) as raised:
        if kind == "cell":
            ip.run_cell_magic(magic, "", text)
        else:
            ip.run_line_magic(magic, text)
    assert type(raised.value) is UsageError
    assert "deeper than 32 levels" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert SESSION.values == before


@pytest.mark.parametrize("value", [nested(3000), holds_itself()], ids=["3000-deep", "cycle"])
def test_deep_python_values_are_one_sentence(dask_config, value):
    with pytest.raises(IngressError, match="deeper than"):
        session.set_settings({"ingress": value})
    with pytest.raises(IngressError, match="scheduler IP"):
        session.set_scheduler_ip(value)
