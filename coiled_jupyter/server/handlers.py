"""Thin REST handlers over :mod:`coiled_jupyter.session`: each request is one session call.

A handler reads the request, makes one call, and answers with the result's JSON payload (the same dict
the ``application/vnd.coiled-jupyter.rules+json`` mimetype carries). Errors map to status codes here
and nowhere else: a person's mistake (:class:`CoiledJupyterError`) is a 400 with its sentences, a cloud
failure (:class:`CloudError`, an unreadable account store included) a 502 (503 when AWS throttles or
is unavailable) with the AWS error code; a group someone else owns, and another kernel's apply holding
the lock past the wait, are 409 (the state of the thing conflicts; the sentence says what to do).

Every method is ``@tornado.web.authenticated``; Jupyter Server's ``APIHandler`` checks XSRF on writes
from a browser session. Core calls are synchronous (boto3), so they run in one worker thread, off the
server's event loop; one thread also keeps this server's session edits in the order they arrived.
Reading the settings makes no cloud call and changes nothing, so it runs on threads of its own and
never waits behind an apply on a slow cloud.

Bodies are read by the strict JSON reader (:func:`coiled_jupyter.strict_yaml.load_json`: bounded, no
key twice), and a refusal quotes at most an excerpt of any value it names.

This server process has a notebook session of its own (the sidebar's edits), apart from every kernel's.
What they share is the cloud (the sandbox or AWS) and the Dask config file, which Save writes and every
kernel reads; see the README's "Sidebar and kernels".
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from .. import session
from ..errors import CloudError, CoiledJupyterError, ForeignGroupError, LockTimeout
from ..session import excerpt, load_json

# AWS codes that mean "try again later" rather than "the call was wrong".
_UNAVAILABLE = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "Unavailable",
        "InternalError",
        "InternalFailure",
        # No answer at all: the core names these after botocore's exception.
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
    }
)

_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coiled-jupyter-rest")
# Reads of the settings: the session is replaced as a whole by the worker, never changed in place, so
# a read sees one state or the next.
_READER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="coiled-jupyter-rest-read")


def _cloud_status(error: CloudError) -> int:
    """409 for a group that is someone else's (a person must decide), 503 for "try again later",
    502 for every other failure of the cloud behind this server."""
    if isinstance(error, ForeignGroupError):
        return 409
    return 503 if error.code in _UNAVAILABLE else 502


class BadRequest(CoiledJupyterError):
    """A request the API cannot read (not JSON, an unknown field or operation)."""


class _Handler(APIHandler):
    """Shared plumbing: the cluster argument, the JSON body, one session call, the error mapping."""

    def cluster(self, body: dict | None = None):
        """The cluster named by the query (``?cluster=``) or the body; None when neither names one
        (the default cluster). A cluster given empty, false or as another type is passed on as it
        is, so the core refuses it as the magics do: it never means the default."""
        given = []
        if body is not None and "cluster" in body:
            given.append(body["cluster"])
        query = self.get_query_argument("cluster", None)
        if query is not None:
            given.append(query)
        if len(given) == 2 and given[0] != given[1]:
            raise BadRequest(
                f"the cluster is named twice, {excerpt(given[0])} in the body and "
                f"{excerpt(given[1])} in the query; name it once."
            )
        if given and given[0] is None:
            raise BadRequest(
                "cluster is null; give the cluster's name, or leave 'cluster' out for the "
                "default cluster."
            )
        return given[0] if given else None

    def body(self, allowed: tuple[str, ...]) -> dict:
        """The JSON object of the request, refusing fields this route does not take."""
        data = load_json(self.request.body or b"{}", "the request body")
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        unknown = sorted(set(data) - set(allowed) - {"cluster"})
        if unknown:
            raise BadRequest(
                f"unknown field(s) {_listed(unknown)}; this request takes "
                f"{', '.join(map(repr, (*allowed, 'cluster')))}"
            )
        return data

    async def respond(self, parse, executor: ThreadPoolExecutor = _WORKER) -> None:
        """``parse()`` reads the request and returns the one session call to make (no arguments).

        The call runs in the worker thread (or ``executor``); its payload is the answer. A bad
        request or input is a 400 with the sentences, a cloud failure a 502/503 (409 for a group
        someone else owns) with the AWS code, a lock held too long a 409; nothing else is caught.
        """
        try:
            call = parse()
            result = await asyncio.get_running_loop().run_in_executor(executor, call)
        except CloudError as error:
            self.refuse(_cloud_status(error), {"message": str(error), "code": error.code})
            return
        except LockTimeout as error:
            self.refuse(409, {"message": str(error), "problems": list(error.problems)})
            return
        except CoiledJupyterError as error:
            self.refuse(400, {"message": str(error), "problems": list(error.problems)})
            return
        self.finish(json.dumps(result.to_payload()))

    def refuse(self, status: int, body: dict) -> None:
        self.set_status(status)
        self.finish(json.dumps(body))


def _listed(names: list, most: int = 5) -> str:
    """Names from a request, each as an excerpt, at most ``most`` of them."""
    shown = ", ".join(excerpt(name) for name in names[:most])
    return f"{shown} and {len(names) - most} more" if len(names) > most else shown


_RULE_FIELDS = ("ports", "source", "protocol", "description")
_PATCH_OPS = {
    "add": ("ports", "source", "protocol", "description"),
    "remove": ("ports", "source", "protocol"),
    "clear": (),
    "reset": (),
    "scheduler_ip": ("choice",),
    "kind": ("kind",),
}


class SettingsHandler(_Handler):
    """``GET`` the effective settings (origin, reachability); ``PATCH`` one edit; ``PUT`` a value."""

    @tornado.web.authenticated
    async def get(self) -> None:
        await self.respond(lambda: partial(session.show, self.cluster()), _READER)

    @tornado.web.authenticated
    async def patch(self) -> None:
        await self.respond(self.parse_patch)

    def parse_patch(self):
        """``{"op": "add"|"remove"|"clear"|"reset"|"scheduler_ip"|"kind", ...}`` as one session
        call."""
        data = self.body(("op", *_RULE_FIELDS, "choice", "kind"))
        op = data.pop("op", None)
        if not isinstance(op, str) or op not in _PATCH_OPS:
            raise BadRequest(f"op {excerpt(op)} is not one of {', '.join(map(repr, _PATCH_OPS))}")
        cluster = self.cluster(data)
        data.pop("cluster", None)
        extra = sorted(set(data) - set(_PATCH_OPS[op]))
        if extra:
            raise BadRequest(f"op {op!r} takes no field(s) {_listed(extra)}")
        # Whatever is missing or wrong, the core says it in its own sentence (as a magic would).
        if op in ("add", "remove"):
            function = session.add if op == "add" else session.remove
            options = {k: v or None for k, v in data.items() if k not in ("ports", "source")}
            return partial(
                function, data.get("ports", ""), data.get("source", ""), cluster=cluster, **options
            )
        if op == "scheduler_ip":
            return partial(session.set_scheduler_ip, data.get("choice", ""), cluster=cluster)
        if op == "kind":
            return partial(session.set_kind, data.get("kind", ""), cluster=cluster)
        return partial(session.clear if op == "clear" else session.reset, cluster)

    @tornado.web.authenticated
    async def put(self) -> None:
        await self.respond(self.parse_put)

    def parse_put(self):
        data = self.body(("value",))
        if "value" not in data:
            raise BadRequest("PUT settings needs 'value': a rule list or a coiled: snippet")
        return partial(session.set_settings, data["value"], cluster=self.cluster(data))


class CheckHandler(_Handler):
    """``GET ?ports=&source=&protocol=&description=``: the sentences for one rule as typed (an empty
    list when it is fine), so the sidebar can say what is wrong while the person types. It changes
    nothing and calls no cloud, so it answers at once, on the event loop."""

    @tornado.web.authenticated
    def get(self) -> None:
        # Other query arguments are ignored, as by every GET here (JupyterLab adds a cache-buster).
        typed = {name: self.get_query_argument(name, "") for name in _RULE_FIELDS}
        problems = session.check_rule(
            typed["ports"],
            typed["source"],
            protocol=typed["protocol"] or None,
            description=typed["description"] or None,
        )
        self.finish(json.dumps({"problems": problems}))


class PlanHandler(_Handler):
    @tornado.web.authenticated
    async def post(self) -> None:
        await self.respond(lambda: self.parse_cloud_change(session.plan))

    def parse_cloud_change(self, function):
        """A plan or an apply; ``override_guardrails`` is ``{"no-world": "why", ...}``."""
        data = self.body(("override_guardrails",))
        overrides = data.get("override_guardrails")
        if overrides is not None and not (
            isinstance(overrides, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in overrides.items())
        ):
            raise BadRequest(
                "override_guardrails must be an object of guardrail names to reasons, e.g. "
                '{"no-world": "vendor debugging until 17:00"}'
            )
        return partial(function, self.cluster(data), override_guardrails=overrides)


class ApplyHandler(PlanHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        await self.respond(lambda: self.parse_cloud_change(session.apply))


class DescribeHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.respond(lambda: partial(session.describe, self.cluster()))


class DestroyHandler(_Handler):
    @tornado.web.authenticated
    async def post(self) -> None:
        await self.respond(lambda: partial(session.destroy, self.cluster(self.body(()))))


class ChangesHandler(_Handler):
    """``GET``: how many applies, destroys and saves this machine has seen, so that an open sidebar
    reads again when a kernel applied or saved. One file's size: no cloud call, no sandbox start,
    nothing created, so it answers at once, on the event loop, and the sidebar may ask often."""

    @tornado.web.authenticated
    def get(self) -> None:
        self.finish(json.dumps({"changes": session.changes()}))


class RehearseHandler(_Handler):
    """The cluster's group enforced with packets in this server's machine (the server's rehearsal)."""

    @tornado.web.authenticated
    async def post(self) -> None:
        await self.respond(lambda: partial(session.rehearse, self.cluster(self.body(()))))


class SaveHandler(_Handler):
    @tornado.web.authenticated
    async def post(self) -> None:
        await self.respond(self.parse_save)

    def parse_save(self):
        data = self.body(("scope",))
        return partial(session.save, data.get("scope", "user"), cluster=self.cluster(data))


def routes(base_url: str) -> list[tuple[str, type]]:
    """The URL patterns of the API under ``base_url``."""
    api = url_path_join(base_url, "coiled-jupyter", "api")
    return [
        (url_path_join(api, "settings"), SettingsHandler),
        (url_path_join(api, "check"), CheckHandler),
        (url_path_join(api, "plan"), PlanHandler),
        (url_path_join(api, "apply"), ApplyHandler),
        (url_path_join(api, "describe"), DescribeHandler),
        (url_path_join(api, "save"), SaveHandler),
        (url_path_join(api, "destroy"), DestroyHandler),
        (url_path_join(api, "changes"), ChangesHandler),
        (url_path_join(api, "rehearse"), RehearseHandler),
    ]
