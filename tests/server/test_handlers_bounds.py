"""The REST routes on bodies that are hostile or odd: every one is a 400 with one short sentence.

A duplicate key in a JSON body is refused as the YAML reader refuses it; a nested or oversized body,
an ``op`` of the wrong type, a number of thousands of digits are 400s, never 500s; a refusal quotes
an excerpt of a value, never the value whole; an empty or falsy cluster is refused as the magics
refuse it; a snippet key that would not be used is refused; and reading the settings does not wait
behind an apply that waits on the cloud.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")

CLUSTER = "rest-bounds"


@pytest.fixture
def rest(jp_fetch, sandbox, dask_config):
    """``await rest(method, route, text=None, **query)`` -> (status, JSON answer); the body is sent
    as the text given, so that it can be what ``json.dumps`` would never write."""

    async def call(method: str, route: str, text: str | bytes | None = None, **query):
        response = await jp_fetch(
            "coiled-jupyter",
            "api",
            route,
            method=method,
            body=None if method == "GET" else (text if text is not None else "{}"),
            params=query,
            raise_error=False,
            request_timeout=60,
        )
        return response.code, json.loads(response.body.decode())

    return call


async def rules_now(rest) -> list[tuple[str, str]]:
    status, data = await rest("GET", "settings")
    assert status == 200, data
    return sorted((row["ports"], row["source"]) for row in data["rows"])


def assert_one_short_sentence(data: dict, *, most: int = 400) -> str:
    message = data["message"]
    assert "Traceback" not in message and "\n" not in message
    assert len(message) <= most, message
    return message


async def test_a_json_body_with_a_key_twice_is_refused_and_changes_nothing(rest):
    before = await rules_now(rest)
    body = (
        '{"op": "add", "ports": "8786", "source": "10.1.0.0/16", "source": "0.0.0.0/0", '
        f'"cluster": "{CLUSTER}"}}'
    )
    status, data = await rest("PATCH", "settings", body)
    assert status == 400, data
    assert "'source' twice" in assert_one_short_sentence(data)
    rule = '{"ports": [8786], "cidr": "10.1.0.0/16", "cidr": "0.0.0.0/0"}'
    status, data = await rest("PUT", "settings", '{"value": [' + rule + "]}")
    assert status == 400, data
    assert "'cidr' twice" in assert_one_short_sentence(data)
    # '-' and '_' are one key, as in the YAML reader
    status, data = await rest(
        "PUT",
        "settings",
        '{"value": {"use_scheduler_public_ip": true, "use-scheduler-public-ip": false}}',
    )
    assert status == 400 and "twice" in data["message"], data
    assert await rules_now(rest) == before


@pytest.mark.parametrize(
    "route, method, text, words",
    [
        ("settings", "PATCH", '{"op": ' + "[" * 5000 + "]" * 5000 + "}", "deeper than"),
        ("settings", "PUT", '{"value": ' + "[" * 100_000 + "]" * 100_000 + "}", "KiB"),
        ("settings", "PATCH", '{"op": ["add"], "ports": "8786", "source": "10.1.0.0/16"}', "op"),
        ("settings", "PATCH", '{"op": {"add": 1}}', "op"),
        ("plan", "POST", b"{\xff}", "UTF-8"),
        ("settings", "PATCH", '{"op": "add", "ports": NaN, "source": "10.1.0.0/16"}', "NaN"),
    ],
)
async def test_odd_bodies_are_400_not_500(rest, route, method, text, words):
    status, data = await rest(method, route, text)
    assert status == 400, data
    assert words in assert_one_short_sentence(data)


@pytest.mark.parametrize(
    "body",
    [
        {"op": "x" * 60_000},
        {"op": "add", "ports": 10**3999, "source": "10.1.0.0/16"},
        {"op": "clear", "k" * 60_000: 1},
    ],
    ids=["op", "port-number", "field-name"],
)
async def test_a_refusal_quotes_an_excerpt_never_the_value_whole(rest, body):
    status, data = await rest("PATCH", "settings", json.dumps(body))
    assert status == 400, data
    assert_one_short_sentence(data, most=600)
    assert all(len(problem) <= 600 for problem in data.get("problems", []))


@pytest.mark.parametrize("cluster", ["", False, 0, [], {}, None])
async def test_an_empty_or_falsy_cluster_in_a_body_is_refused_not_the_default(rest, cluster):
    status, data = await rest("POST", "plan", json.dumps({"cluster": cluster}))
    assert status == 400, data
    assert "cluster" in assert_one_short_sentence(data)
    status, data = await rest("POST", "save", json.dumps({"cluster": cluster}))
    assert status == 400, data


async def test_an_empty_cluster_in_the_query_is_refused(rest):
    status, data = await rest("GET", "settings", cluster="")
    assert status == 400, data
    assert "empty" in assert_one_short_sentence(data)


async def test_a_cluster_named_twice_differently_is_refused(rest):
    status, data = await rest("POST", "plan", json.dumps({"cluster": "one"}), cluster="two")
    assert status == 400, data
    assert "twice" in assert_one_short_sentence(data)


async def test_top_level_ingress_beside_a_coiled_snippet_is_refused_naming_where_it_belongs(rest):
    before = await rules_now(rest)
    snippet = (
        "coiled:\n  use_scheduler_public_ip: false\n"
        "ingress:\n  - {ports: [8786], cidr: 10.1.0.0/16}\n"
    )
    status, data = await rest("PUT", "settings", json.dumps({"value": snippet}))
    assert status == 400, data
    message = assert_one_short_sentence(data)
    assert "'ingress'" in message and "coiled.backend-options" in message
    _, after = await rest("GET", "settings")
    assert after["use_scheduler_public_ip"] is True  # the toggle was not kept either
    assert await rules_now(rest) == before


async def test_reading_the_settings_does_not_wait_behind_an_apply_on_a_hung_cloud(rest):
    from coiled_jupyter.provision import aws
    from coiled_jupyter.provision.target import target

    reached, release = threading.Event(), threading.Event()

    def hang(**_):
        reached.set()
        release.wait(60)  # the apply is held here until the read has been answered

    events = aws.client("ec2", target(CLUSTER).connection()).meta.events
    events.register("before-send.ec2.DescribeSecurityGroups", hang)
    try:
        applying = asyncio.ensure_future(rest("POST", "apply", json.dumps({"cluster": CLUSTER})))
        await asyncio.get_running_loop().run_in_executor(None, reached.wait, 60)
        assert reached.is_set()
        status, data = await rest("GET", "settings", cluster=CLUSTER)
        assert status == 200, data
        assert not applying.done()  # answered while the apply still waits on the cloud
    finally:
        release.set()
        events.unregister("before-send.ec2.DescribeSecurityGroups", hang)
    status, data = await applying
    assert status == 200, data
