"""The REST routes under /coiled-jupyter/api/ on a real Jupyter Server, against the sandbox.

Each route answers with the payload of the session call it stands for; a bad input is a 400 with the
sentence and changes nothing; a cloud failure is a 502/503 with the AWS code; nothing answers without
Jupyter's auth, and a browser session's write without the XSRF token is refused.
"""

from __future__ import annotations

import asyncio
import json
import threading
import warnings

import dask.config
import pytest
import yaml

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")

CLUSTER = "rest-api"
ROUTES = [
    ("GET", "settings"),
    ("GET", "check"),
    ("PATCH", "settings"),
    ("PUT", "settings"),
    ("POST", "plan"),
    ("POST", "apply"),
    ("GET", "describe"),
    ("POST", "save"),
    ("POST", "destroy"),
    ("GET", "changes"),
]
# The built-in default, as the settings list it: one row per port.
DEFAULT = [("8786", "0.0.0.0/0"), ("8787", "0.0.0.0/0")]
SECRET = "s3cr3t-never-shown-0123456789"


@pytest.fixture
def api(jp_fetch, sandbox, dask_config):
    """``await api(method, route, body=None, **query)`` -> (status, JSON body); every body is kept
    in ``api.bodies`` so a test can look for secrets in all of them."""
    bodies: list[str] = []

    async def call(method: str, route: str, body: dict | None = None, timeout=20, **query):
        payload = None if method == "GET" else json.dumps(body or {})
        response = await jp_fetch(
            "coiled-jupyter",
            "api",
            route,
            method=method,
            body=payload,
            params=query,
            raise_error=False,
            request_timeout=timeout,
        )
        text = response.body.decode()
        bodies.append(text)
        return response.code, json.loads(text)

    call.bodies = bodies
    return call


def sources(data: dict) -> list[tuple[str, str]]:
    return sorted((row["ports"], row["source"]) for row in data["rows"])


async def test_get_settings_names_the_cluster_the_sandbox_and_the_origin(api):
    status, data = await api("GET", "settings", cluster=CLUSTER)
    assert status == 200
    assert data["kind"] == "settings"
    assert data["cluster"] == CLUSTER
    assert data["backend"] == "sandbox"
    assert "not AWS" in data["backend_label"]
    assert sources(data) == DEFAULT
    assert "built-in" in json.dumps(data).lower()
    assert data["reachability"] is not None


async def test_patch_edits_the_server_session_and_get_sees_the_edit(api):
    status, data = await api(
        "PATCH",
        "settings",
        {
            "op": "add",
            "ports": "8786,8787",
            "source": "10.1.0.0/16",
            "description": "office VPN",
            "cluster": CLUSTER,
        },
    )
    assert status == 200, data
    assert sources(data) == [("8786", "10.1.0.0/16"), ("8787", "10.1.0.0/16")]
    assert {row["description"] for row in data["rows"]} == {"office VPN"}
    assert data["ingress_origin"] == "notebook session (this Jupyter server)"  # not a kernel's
    _, again = await api("GET", "settings", cluster=CLUSTER)
    assert sources(again) == sources(data)

    status, data = await api(
        "PATCH",
        "settings",
        {"op": "remove", "ports": "8787", "source": "10.1.0.0/16", "cluster": CLUSTER},
    )
    assert status == 200, data
    assert sources(data) == [("8786", "10.1.0.0/16")]

    status, data = await api(
        "PATCH", "settings", {"op": "scheduler_ip", "choice": "private", "cluster": CLUSTER}
    )
    assert status == 200, data
    assert data["use_scheduler_public_ip"] is False

    status, data = await api("PATCH", "settings", {"op": "clear", "cluster": CLUSTER})
    assert (status, data["rows"]) == (200, [])

    status, data = await api("PATCH", "settings", {"op": "reset", "cluster": CLUSTER})
    assert status == 200
    assert sources(data) == DEFAULT
    assert data["use_scheduler_public_ip"] is True


async def test_put_sets_a_rule_list_or_a_coiled_snippet(api):
    status, data = await api(
        "PUT", "settings", {"value": [{"ports": [8786], "cidr": "10.2.0.0/16"}]}
    )
    assert status == 200, data
    assert sources(data) == [("8786", "10.2.0.0/16")]
    snippet = (
        "coiled:\n  use_scheduler_public_ip: false\n  backend-options:\n    ingress:\n"
        "      - {ports: [8787], cidr: 10.3.0.0/16}\n"
    )
    status, data = await api("PUT", "settings", {"value": snippet})
    assert status == 200, data
    assert sources(data) == [("8787", "10.3.0.0/16")]
    assert data["use_scheduler_public_ip"] is False


async def test_plan_apply_describe_reach_the_cloud(api, cloud):
    await api(
        "PUT", "settings", {"value": [{"ports": [8786], "cidr": "10.4.0.0/16"}], "cluster": CLUSTER}
    )
    status, plan = await api("POST", "plan", {"cluster": CLUSTER})
    assert status == 200, plan
    assert plan["kind"] == "plan"
    assert [(r["action"], r["source"]) for r in plan["rows"]] == [("add", "10.4.0.0/16")]

    status, applied = await api("POST", "apply", {"cluster": CLUSTER})
    assert status == 200, applied
    assert applied["kind"] == "apply"
    assert ("8786", "10.4.0.0/16") in sources(applied)
    # Read back independently of the code under test.
    groups = cloud.ec2.describe_security_groups(
        Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": [CLUSTER]}]
    )["SecurityGroups"]
    assert [r["CidrIp"] for p in groups[0]["IpPermissions"] for r in p["IpRanges"]] == [
        "10.4.0.0/16"
    ]

    status, described = await api("GET", "describe", cluster=CLUSTER)
    assert status == 200, described
    assert described["kind"] == "rules"
    assert described["group_id"] == groups[0]["GroupId"]
    assert sources(described) == sources(applied)


async def test_save_writes_the_user_file_or_the_account_store(api, cloud, dask_config):
    await api("PUT", "settings", {"value": [{"ports": [8786], "cidr": "10.5.0.0/16"}]})
    status, saved = await api("POST", "save", {"scope": "user"})
    assert status == 200, saved
    assert saved["kind"] == "save"
    written = yaml.safe_load((dask_config / "coiled.yaml").read_text())
    assert written["coiled"]["backend-options"]["ingress"] == [
        {"ports": [8786], "cidr": "10.5.0.0/16"}
    ]

    status, saved = await api("POST", "save", {"scope": "account"})
    assert status == 200, saved
    names = [p["Name"] for p in cloud.ssm.describe_parameters()["Parameters"]]
    assert any(name.startswith("/coiled-jupyter/backend-options") for name in names)


async def test_changes_counts_what_any_process_applies_destroys_or_saves(api, cloud):
    """A kernel's apply or save (here: the session called in this process, as a kernel calls it)
    and the server's own are both counted, so an open sidebar knows to read again."""
    from coiled_jupyter import session

    _, before = await api("GET", "changes")
    session.set_settings([{"ports": [8786], "cidr": "10.8.0.0/16"}], cluster="kernel-side")
    session.apply("kernel-side")
    _, after_kernel = await api("GET", "changes")
    assert after_kernel["changes"] == before["changes"] + 1
    session.save("user", cluster="kernel-side")
    status, destroyed = await api("POST", "destroy", {"cluster": "kernel-side"})
    assert status == 200, destroyed
    assert destroyed["kind"] == "destroy" and destroyed["deleted"]
    assert (
        cloud.ec2.describe_security_groups(
            Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": ["kernel-side"]}]
        )["SecurityGroups"]
        == []
    )
    _, after = await api("GET", "changes")
    assert after["changes"] == before["changes"] + 3
    # Showing and editing settings are not changes of the cloud or of a saved file.
    await api("PATCH", "settings", {"op": "add", "ports": "9000", "source": "10.9.0.0/16"})
    await api("GET", "settings")
    assert (await api("GET", "changes"))[1] == after


async def test_changes_creates_nothing_and_starts_nothing(api, tmp_path, monkeypatch):
    """Asked often by a visible sidebar: it must not create the state folder or start a sandbox."""
    import dask.config

    folder = tmp_path / "no-state-yet"
    with dask.config.set({"coiled-jupyter.sandbox.state-dir": str(folder)}):
        status, data = await api("GET", "changes")
    assert (status, data) == (200, {"changes": 0})
    assert not folder.exists()


async def test_a_bad_rule_is_a_400_with_the_sentence_and_changes_nothing(api):
    await api("PUT", "settings", {"value": [{"ports": [8786], "cidr": "10.6.0.0/16"}]})
    status, data = await api(
        "PATCH", "settings", {"op": "add", "ports": "8786", "source": "10.1.0.2/16"}
    )
    assert status == 400
    assert "host bits" in data["message"]
    assert "10.1.0.0/16" in data["message"]
    assert data["problems"] and all(isinstance(p, str) for p in data["problems"])
    _, after = await api("GET", "settings")
    assert sources(after) == [("8786", "10.6.0.0/16")]


@pytest.mark.parametrize(
    "method, route, body, words",
    [
        ("PATCH", "settings", {"op": "chmod"}, "is not one of"),
        ("PATCH", "settings", {"op": "add", "ports": "8786"}, "empty cidr"),
        ("PATCH", "settings", {"op": "remove", "source": "10.0.0.0/8"}, "which is not a port"),
        ("PATCH", "settings", {"op": "scheduler_ip"}, "'public' or 'private'"),
        ("PATCH", "settings", {"op": "clear", "ports": "8786"}, "takes no field"),
        ("PATCH", "settings", {"op": "scheduler_ip", "choice": "sideways"}, "sideways"),
        ("PUT", "settings", {}, "needs 'value'"),
        ("PUT", "settings", {"value": [{"ports": [True], "cidr": "10.0.0.0/8"}]}, "True"),
        ("POST", "save", {"scope": "everywhere"}, "everywhere"),
        ("POST", "plan", {"clutser": "x"}, "unknown field"),
    ],
)
async def test_bad_requests_are_400_with_one_sentence(api, method, route, body, words):
    status, data = await api(method, route, body)
    assert status == 400, data
    assert words in data["message"]
    assert "Traceback" not in data["message"]
    if body.get("op") in ("add", "remove", "scheduler_ip"):
        # What a person typed: the core's sentence, as a magic says it, never the API's wording.
        assert "op '" not in data["message"]


async def test_a_body_that_is_not_json_is_a_400(jp_fetch, sandbox, dask_config):
    response = await jp_fetch(
        "coiled-jupyter", "api", "plan", method="POST", body="{not json", raise_error=False
    )
    assert response.code == 400
    assert "not JSON" in json.loads(response.body)["message"]


@pytest.mark.parametrize(
    "code, status", [("UnauthorizedOperation", 502), ("RequestLimitExceeded", 503)]
)
async def test_a_cloud_fault_is_a_5xx_with_the_aws_code(
    api, jp_fetch, faults, fast_retries, code, status
):
    """The cloud call runs in a worker thread: while it is held at its first send, the server's event
    loop still answers (a blocked loop would never answer the status page, and the test would end
    in the status page's time-out)."""
    reached, release = threading.Event(), threading.Event()

    def hold(_request):
        reached.set()
        release.wait(60)

    answer = 403 if status == 502 else 503
    faults.fail("DescribeSecurityGroups", code, status=answer, before=hold)  # the first send
    faults.fail("DescribeSecurityGroups", code, status=answer, times=None)  # and every retry
    plan = asyncio.ensure_future(api("POST", "plan", {"cluster": CLUSTER}, timeout=90))
    try:
        await until(reached.is_set)
        status_page = await jp_fetch("api", "status", request_timeout=30)
        assert status_page.code == 200
        assert not plan.done()
    finally:
        release.set()
    got, data = await plan
    assert got == status, data
    assert data["code"] == code
    assert code in data["message"]
    assert set(data) == {"message", "code"}


async def until(condition, deadline: float = 60) -> None:
    """Poll ``condition`` from the event loop until it holds; fail at the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, f"{condition} never held"
        await asyncio.sleep(0.01)


async def test_check_says_what_is_wrong_with_a_rule_as_typed_and_changes_nothing(api):
    status, data = await api("GET", "check", ports="8786", source="10.1.0.2/16")
    assert status == 200, data
    [problem] = data["problems"]
    assert "host bits" in problem and "10.1.0.0/16" in problem
    status, data = await api(
        "GET", "check", ports="8786,87860", source="10.1.0.0/16", protocol="icmp"
    )
    assert status == 200 and len(data["problems"]) == 2, data
    status, data = await api(
        "GET", "check", ports="8786-8787", source="me", protocol="udp", description="VPN"
    )
    assert (status, data) == (200, {"problems": []})
    _, settings = await api("GET", "settings", cluster=CLUSTER)
    assert sources(settings) == DEFAULT  # nothing was added


async def test_a_group_someone_else_owns_is_a_409_with_the_sentence(api, cloud):
    gid = cloud.ec2.create_security_group(
        GroupName=f"coiled-jupyter-{CLUSTER}", Description="made by hand"
    )["GroupId"]
    status, data = await api("POST", "apply", {"cluster": CLUSTER})
    assert status == 409, data
    assert gid in data["message"] and "not owned" in data["message"]
    assert data["code"]


async def test_an_unreadable_account_store_is_a_502_with_its_code(api, cloud):
    cloud.ssm.put_parameter(Name="/coiled-jupyter/backend-options", Value="{", Type="String")
    status, data = await api("POST", "plan", {"cluster": CLUSTER})
    assert status == 502, data
    assert data["code"] == "InvalidAccountDefaults"
    assert data["message"].startswith("InvalidAccountDefaults: ")
    assert "the account defaults are needed" in data["message"]


async def test_another_apply_holding_the_lock_past_the_wait_is_a_409(api):
    import dask.config

    from coiled_jupyter.provision.target import target
    from coiled_jupyter.state import file_lock, lock_name

    t = target(CLUSTER)
    with dask.config.set({"coiled-jupyter.lock-timeout": 0.3}):
        with file_lock(lock_name(t.backend, t.region, t.vpc_id, t.cluster)):
            status, data = await api("POST", "apply", {"cluster": CLUSTER})
    assert status == 409, data
    assert "another" in data["message"].lower() or "waited" in data["message"].lower()


@pytest.mark.parametrize("method, route", ROUTES)
async def test_every_route_needs_jupyter_auth(jp_fetch, sandbox, dask_config, method, route):
    response = await jp_fetch(
        "coiled-jupyter",
        "api",
        route,
        method=method,
        body=None if method == "GET" else "{}",
        headers={"Authorization": ""},
        raise_error=False,
    )
    assert response.code == 403


@pytest.mark.parametrize("method, route", [r for r in ROUTES if r[0] != "GET"])
async def test_a_write_that_passes_the_xsrf_check_without_credentials_is_refused(
    http_server_client, jp_base_url, sandbox, dask_config, cloud, method, route
):
    """A matching XSRF cookie and header and no token, no login cookie: only ``@authenticated``
    stands between this request and the cloud (the XSRF check alone would let it through)."""
    token = "2|0123abcd|0123456789abcdef0123456789abcdef|1700000000"
    body = {"cluster": CLUSTER, "op": "clear", "scope": "user", "value": []}
    response = await http_server_client.fetch(
        f"{jp_base_url}coiled-jupyter/api/{route}",
        method=method,
        body=json.dumps(body),
        headers={"Cookie": f"_xsrf={token}", "X-XSRFToken": token},
        raise_error=False,
    )
    assert response.code == 403, response.body
    assert (
        cloud.ec2.describe_security_groups(
            Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": [CLUSTER]}]
        )["SecurityGroups"]
        == []
    )
    assert not (dask_config / "coiled.yaml").exists()


async def test_a_cookie_session_write_needs_the_xsrf_token(
    jp_fetch, http_server_client, jp_base_url, sandbox, dask_config
):
    # A token-authenticated request gets the login cookie, as a browser would after logging in.
    first = await jp_fetch("coiled-jupyter", "api", "settings")
    cookies = first.headers.get_list("Set-Cookie")
    login = "; ".join(c.split(";")[0] for c in cookies)
    assert login
    url = f"{jp_base_url}coiled-jupyter/api/settings"
    body = json.dumps({"op": "clear"})

    async def patch(headers):
        return await http_server_client.fetch(
            url, method="PATCH", body=body, headers=headers, raise_error=False
        )

    refused = await patch({"Cookie": login})
    assert refused.code == 403
    # The same cookie with the XSRF token (cookie and header, as JupyterLab sends them) passes.
    token = "2|0123abcd|0123456789abcdef0123456789abcdef|1700000000"
    allowed = await patch({"Cookie": f"{login}; _xsrf={token}", "X-XSRFToken": token})
    assert allowed.code == 200, allowed.body


async def test_no_secret_in_any_answer(api, faults, dask_config, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    (dask_config / "coiled.yaml").write_text(f"coiled:\n  token: {SECRET}\n")
    await api("PATCH", "settings", {"op": "add", "ports": "8786", "source": "10.7.0.0/16"})
    await api("GET", "settings")
    await api("POST", "plan")
    await api("POST", "apply")
    await api("GET", "describe")
    await api("POST", "save", {"scope": "user"})
    await api("PATCH", "settings", {"op": "add", "ports": "8786", "source": "10.1.0.2/16"})
    faults.fail("DescribeSecurityGroups", "AuthFailure", status=401, times=None)
    await api("POST", "apply")
    assert len(api.bodies) == 8
    assert not [body for body in api.bodies if SECRET in body]
    assert SECRET in (dask_config / "coiled.yaml").read_text()


def test_loading_the_extension_raises_no_auth_warning(jp_serverapp):
    from jupyter_server.utils import JupyterServerAuthWarning

    from coiled_jupyter.server import _load_jupyter_server_extension

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _load_jupyter_server_extension(jp_serverapp)
    assert not [w for w in caught if issubclass(w.category, JupyterServerAuthWarning)]


async def test_rehearse_is_the_session_call(api):
    """POST rehearse is session.rehearse: before an apply there is no group, a 400 with the sentence
    (the rehearsal itself is tested with packets in tests/test_rehearsal.py); where this machine
    cannot rehearse, the one sentence saying why, as a result."""
    from coiled_jupyter.rehearsal.namespaces import unavailable

    status, body = await api("POST", "rehearse", {"cluster": "not-applied-yet"})
    reason = unavailable()
    if reason is None:
        assert status == 400, body
        assert body["message"].startswith("cluster 'not-applied-yet' has no security group yet")
    else:
        assert status == 200 and body["summary"] == reason
    status, body = await api("POST", "rehearse", {"cluster": "x", "live": True})
    assert status == 400 and "unknown field(s) 'live'" in body["message"]


async def test_patch_kind_says_which_ports_the_sidebar_checks(api, monkeypatch):
    """Issue 18: the sidebar's kind control, and the lockout sentence before Apply."""
    monkeypatch.setitem(dask.config.config["coiled-jupyter"], "cluster-kind", "dask")
    status, data = await api(
        "PUT", "settings", {"value": [{"ports": [22, 443], "cidr": "10.1.0.0/16"}]}
    )
    assert status == 200, data
    assert any("no client will connect: add 8786" in w for w in data["warnings"])
    status, data = await api("PATCH", "settings", {"op": "kind", "kind": "coiled"})
    assert status == 200, data
    assert data["ports"]["summary"] == (
        "kind coiled (notebook session (this Jupyter server)): scheduler 443 (TLS), "
        "dashboard 443 (HTTPS)"
    )
    assert not any("no client will connect" in w for w in data["warnings"])
    status, data = await api("PATCH", "settings", {"op": "kind", "kind": "spark"})
    assert status == 400 and "use 'coiled'" in data["message"]
    _, data = await api("GET", "settings")
    assert data["ports"]["kind"] == "coiled"


async def test_the_newer_page_example_as_the_sidebar_sends_it(api, monkeypatch):
    """Coiled's current page, [{ports: [22, 443], cidr: 10.1.0.0/16}], as the sidebar's PUT."""
    monkeypatch.setitem(dask.config.config["coiled-jupyter"], "cluster-kind", "coiled")
    page = [{"ports": [22, 443], "cidr": "10.1.0.0/16"}]
    status, data = await api("PUT", "settings", {"value": page})
    assert status == 200, data
    assert sources(data) == [("22", "10.1.0.0/16"), ("443", "10.1.0.0/16")]
    assert data["reachability"]["scheduler"]["port"] == 443
    assert not any("no client will connect" in w for w in data["warnings"])
    status, data = await api("POST", "apply", {})
    assert status == 200, data
    assert ("443", "10.1.0.0/16") in sources(data)


async def test_settings_put_for_one_cluster_never_reach_another_plan(api):
    prod = {"value": [{"ports": [9100], "cidr": "10.20.0.0/16"}], "cluster": "prod"}
    status, data = await api("PUT", "settings", prod)
    assert (status, data["cluster"]) == (200, "prod"), data
    status, patched = await api(
        "PATCH", "settings", {"op": "scheduler_ip", "choice": "private", "cluster": "prod"}
    )
    assert status == 200, patched
    for other in ({"cluster": "dev"}, {}):  # another cluster, and the default one
        status, plan = await api("POST", "plan", other)
        assert status == 200, plan
        assert "10.20.0.0/16" not in {row["source"] for row in plan["rows"]}
    _, dev = await api("GET", "settings", cluster="dev")
    assert sources(dev) == DEFAULT and dev["use_scheduler_public_ip"] is True
    assert dev["session_clusters"] == ["prod"]
    _, plan = await api("POST", "plan", {"cluster": "prod"})
    assert [(r["action"], r["source"]) for r in plan["rows"]] == [("add", "10.20.0.0/16")]


# Faults botocore raises rather than answers, injected at before-send on clients of the test's own
# (fresh_faults): each is one sentence with its code over REST, never a 500 with a traceback.
_PORTAL = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><p>Accept<br></body></html>"
)


def _not_reached(request):
    from botocore.exceptions import EndpointConnectionError

    return EndpointConnectionError(endpoint_url=request.url)


@pytest.mark.parametrize(
    "inject, code, status",
    [
        (lambda f: f.answer("CreateSecurityGroup", _PORTAL), "ResponseParserError", 502),
        (lambda f: f.answer("DescribeSecurityGroups", b""), "ResponseParserError", 502),
        (
            lambda f: f.throw("CreateSecurityGroup", _not_reached, times=None),
            "EndpointConnectionError",
            503,
        ),
        (lambda f: f.answer("GetParameter", b"{}"), "InvalidResponse", 502),
    ],
    ids=["html page", "empty body", "no connection", "ssm answer without parameter"],
)
async def test_a_failure_botocore_raises_is_a_5xx_sentence(api, fresh_faults, inject, code, status):
    inject(fresh_faults)
    got, data = await api("POST", "apply", {"cluster": CLUSTER}, timeout=90)
    assert got == status, data
    assert data["code"] == code
    assert data["message"].startswith(f"{code}: ")
    assert "Traceback" not in data["message"] and "<html" not in data["message"]


async def test_a_mistyped_aws_profile_is_a_sentence_not_a_500(
    api, aws_backend_on_sandbox, monkeypatch
):
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    for method, route in (("GET", "describe"), ("POST", "plan"), ("POST", "apply")):
        got, data = await api(method, route, {} if method == "POST" else None)
        assert got == 502, (route, data)
        assert data["code"] == "ProfileNotFound"
        assert "'no-such-profile'" in data["message"] and "AWS_PROFILE" in data["message"]
