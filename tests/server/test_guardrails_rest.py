"""Team guardrails over the REST API (the sidebar's way in): a plan that breaks one is a 400 with the
guardrail's sentence; ``override_guardrails`` overrides by name with a reason."""

from __future__ import annotations

import json

from coiled_jupyter import session


async def test_rest_plan_is_refused_and_takes_overrides(jp_fetch, sandbox, dask_config):
    session.set_guardrails(no_world="8786")
    session.add(8786, "everyone", cluster="rest")

    async def post(route, body):
        response = await jp_fetch(
            "coiled-jupyter", "api", route, method="POST", body=json.dumps(body), raise_error=False
        )
        return response.code, json.loads(response.body.decode())

    status, data = await post("plan", {"cluster": "rest"})
    assert status == 400 and "guardrail no-world" in data["message"]
    status, data = await post(
        "plan", {"cluster": "rest", "override_guardrails": {"no-world": "vendor"}}
    )
    assert status == 200 and any("vendor" in n for n in data["notes"])
    status, data = await post("plan", {"cluster": "rest", "override_guardrails": ["no-world"]})
    assert status == 400 and "override_guardrails must be an object" in data["message"]
