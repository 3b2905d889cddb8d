"""Hostile and broken input over the REST routes of a real Jupyter Server: each is a 200 or a 4xx/5xx
with one sentence, never a 500 or a traceback, within 2 s and 200 MB; a refusal changes nothing; no
secret in any body or log line; and after every accepted edit an apply leaves the cloud admitting
nothing the edit did not write (tests/widening_oracle.py). Counted by tests/hostile.py.

The cases are the field values of ``hostile_corpus.yaml`` (each sent as a PATCH ``add``) and its
``rest`` bodies, sent as raw text (duplicate keys, deep nesting and non-JSON stay as written).
"""

from __future__ import annotations

import json
import logging
import traceback

import pytest
from hostile import (
    CORPUS,
    FAKE_CREDENTIALS,
    Outcome,
    build,
    cloud_grants,
    timed,
    traced,
    widened_in_cloud,
    written_by_fields,
    written_by_value,
)
from widening_oracle import excess, grants

from coiled_jupyter import session
from coiled_jupyter.errors import CoiledJupyterError
from coiled_jupyter.settings import SESSION

START = [{"ports": [8786, 8787], "cidr": "10.1.0.0/16"}]
VALID = {"ports": "8786", "source": "10.9.0.0/16", "description": "hostile suite"}


def _cases() -> list:
    cases = []
    for name, values in CORPUS["fields"].items():
        for index, value in enumerate(values):
            body = {"op": "add", **VALID, name: value}
            cases.append(
                pytest.param(
                    {
                        "method": "PATCH",
                        "route": "settings",
                        "body": json.dumps(body),
                        "writes": written_by_fields(body["ports"], body["source"]),
                    },
                    id=f"{name}-{index}",
                )
            )
    for case in CORPUS["rest"]:
        marks = (
            [pytest.mark.xfail(strict=True, reason=f"fixed by part {case['xfail']}")]
            if case.get("xfail")
            else []
        )
        case = {**case, "body": build(case["body"])}
        cases.append(pytest.param(case, id=case["name"], marks=marks))
    return cases


@pytest.fixture
def world(jp_fetch, aws_backend_on_sandbox, cloud, dask_config, monkeypatch, caplog):
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.INFO)
    return cloud


async def send(jp_fetch, method: str, route: str, body: str | None, query=None):
    response = await jp_fetch(
        "coiled-jupyter",
        "api",
        route,
        method=method,
        body=None if method == "GET" else body,
        params=query or {},
        raise_error=False,
        request_timeout=30,
    )
    return response.code, response.body.decode("utf-8", "replace")


def state(cloud):
    groups = cloud.ec2.describe_security_groups()["SecurityGroups"]
    return (
        SESSION.values,
        json.dumps(sorted([g["GroupId"], g.get("IpPermissions", [])] for g in groups)),
    )


def effective():
    try:
        return grants(session.show().settings.rules)
    except CoiledJupyterError:
        return []


@pytest.mark.parametrize("case", _cases())
async def test_rest_input(jp_fetch, world, caplog, case):
    session.set_settings(START)
    before, declared, cloud_before = state(world), effective(), cloud_grants(world.ec2)
    outcome = Outcome("REST", known=case.get("xfail") or "")
    query = case.get("query")
    with timed(outcome):
        status, text = await send(jp_fetch, case["method"], case["route"], case["body"], query)
    with traced(outcome):
        again, _ = await send(jp_fetch, case["method"], case["route"], case["body"], query)
    outcome.texts.append(text)
    outcome.refused = status != 200
    if status >= 500 and status not in (502, 503) or again >= 500 and again not in (502, 503):
        outcome.tracebacks.append(f"{status}/{again}: {text[:2000]}")
    try:
        outcome.message = json.loads(text).get("message", "")
    except (ValueError, AttributeError):
        outcome.message = text
    if outcome.refused:
        outcome.changed_after_refusal = state(world) != before
    else:
        applied, applied_text = await send(jp_fetch, "POST", "apply", "{}")
        outcome.texts.append(applied_text)
        if applied >= 500 and applied not in (502, 503):
            outcome.tracebacks.append(f"apply {applied}: {applied_text[:2000]}")
        written = case.get("writes")
        if written is None:
            written = written_by_value(json.loads(case["body"] or "null"))
        allowed = [*declared, *written]
        outcome.widened += excess(effective(), allowed)
        outcome.widened += widened_in_cloud(cloud_before, cloud_grants(world.ec2), allowed)
    for record in caplog.records:
        outcome.texts.append(record.getMessage())
        if record.exc_info:
            outcome.tracebacks.append("".join(traceback.format_exception(record.exc_info[1])))
    outcome.record()
    if case.get("expect") == "refused":
        assert outcome.refused, f"accepted: {text[:300]}"
    if outcome.refused:
        assert len(outcome.message) < 600 and outcome.message.count("\n") <= 2, outcome.message
        assert case.get("says", "") in outcome.message
