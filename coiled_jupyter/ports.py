"""The kinds of cluster and the ports they listen on: one table that every verdict, warning, plan
note, port matrix and table header reads.

A rule is only as good as the port it opens. A Coiled cluster started by today's client (read from
the ``coiled`` 1.135.6 wheel, ``coiled/utils.py`` ``cluster_firewall`` and ``coiled/v2/cluster.py``)
listens for clients on ``coiled.scheduler_port`` (443 by default: scheduler comms over TLS, and the
HTTPS dashboard on the same port while ``coiled.use_dashboard_https`` is true, its default; 8787
otherwise); SSH is 22, Spark Connect 15003, Jupyter on the scheduler 8888. A plain Dask cluster
(dask-cloudprovider, ``distributed`` by hand) listens on 8786 and 8787. Rules for 8786 on a cluster
that listens on 443 admit no client, so the kind is a setting with an origin like every other:
this session (``--kind``, the panel, the sidebar), else Dask's ``coiled-jupyter.cluster-kind``,
else the built-in default ``coiled``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

from .rules import IngressError
from .strict_yaml import excerpt

COILED, DASK = "coiled", "dask"
KINDS = (COILED, DASK)
KIND_OPTION = "cluster-kind"
KIND_KEY = f"coiled-jupyter.{KIND_OPTION}"
# The Coiled client whose source the coiled kind was read from; re-read on each release.
COILED_VERSION = "1.135.6"
SCHEDULER_PORT_KEY = "coiled.scheduler_port"
DASHBOARD_HTTPS_KEY = "coiled.use_dashboard_https"

# coiled/utils.py cluster_firewall and coiled/v2/cluster.py, as installed:
COILED_SCHEDULER = 443  # cluster_firewall(scheduler=443)
COILED_HTTP_DASHBOARD = 8787  # opened only when https is off
SSH = 22
SPARK = 15003  # coiled.spark.SPARK_CONNECT_PORT
JUPYTER = 8888
# A plain Dask cluster: distributed's defaults.
DASK_SCHEDULER, DASK_DASHBOARD = 8786, 8787

_BUILT_IN = "built-in default"
_COILED_DEFAULT = f"Coiled's default (coiled {COILED_VERSION})"


@dataclass(frozen=True)
class PortUse:
    """One port of the matrix: who connects to it and why; ``needed`` when a client cannot work
    without it (the scheduler's port), else it is opened only for that use."""

    port: int | None  # None: every port (the cluster's own traffic)
    use: str
    needed: bool = False

    @property
    def ports(self) -> str:
        return "all" if self.port is None else str(self.port)


@dataclass(frozen=True)
class PortModel:
    """The ports a cluster of one kind listens on, each value with where it came from."""

    kind: str
    kind_origin: str
    scheduler: int
    scheduler_origin: str
    dashboard: int
    dashboard_https: bool
    dashboard_origin: str

    @property
    def name(self) -> str:
        return "Coiled cluster" if self.kind == COILED else "Dask cluster"

    @property
    def ports_text(self) -> str:
        """``scheduler 443 (TLS), dashboard 443 (HTTPS)``: what every view says it assumed."""
        if self.kind == DASK:
            return f"scheduler {self.scheduler}, dashboard {self.dashboard} (HTTP)"
        web = "HTTPS" if self.dashboard_https else "HTTP"
        return f"scheduler {self.scheduler} (TLS), dashboard {self.dashboard} ({web})"

    @property
    def summary(self) -> str:
        """``kind coiled (built-in default): scheduler 443 (TLS), dashboard 443 (HTTPS)``."""
        return f"kind {self.kind} ({self.kind_origin}): {self.ports_text}"

    @property
    def listens(self) -> str:
        """``listens on 443 (scheduler and HTTPS dashboard)``, for the lockout sentence."""
        if self.dashboard == self.scheduler:
            web = "HTTPS" if self.dashboard_https else "HTTP"
            return f"listens on {self.scheduler} (scheduler and {web} dashboard)"
        return f"listens on {self.scheduler} (scheduler) and {self.dashboard} (dashboard)"

    def uses(self) -> list[PortUse]:
        """Every port the cluster may need opened, what uses it, in the order IT reads them."""
        if self.kind == DASK:
            found = [
                PortUse(self.scheduler, "client to scheduler", needed=True),
                PortUse(self.dashboard, "dashboard (HTTP)"),
            ]
        elif self.dashboard == self.scheduler:
            web = "HTTPS" if self.dashboard_https else "HTTP"
            found = [
                PortUse(
                    self.scheduler,
                    f"client to scheduler (TLS) and the {web} dashboard",
                    needed=True,
                )
            ]
        else:
            web = "HTTPS" if self.dashboard_https else "HTTP"
            found = [
                PortUse(self.scheduler, "client to scheduler (TLS)", needed=True),
                PortUse(self.dashboard, f"dashboard ({web})"),
            ]
        if self.kind == COILED:
            found += [
                PortUse(SSH, "SSH to the scheduler (allow_ssh, allow_ssh_from)"),
                PortUse(
                    SPARK, "Spark Connect (allow_spark; on by default with the HTTPS dashboard)"
                ),
                PortUse(JUPYTER, "Jupyter on the scheduler (coiled.Cluster(jupyter=True))"),
            ]
        found.append(PortUse(None, "workers and scheduler among themselves (the group's own rule)"))
        return found

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "kind_origin": self.kind_origin,
            "scheduler_port": self.scheduler,
            "scheduler_port_origin": self.scheduler_origin,
            "dashboard_port": self.dashboard,
            "dashboard_https": self.dashboard_https,
            "dashboard_origin": self.dashboard_origin,
            "summary": self.summary,
            "coiled_version": COILED_VERSION if self.kind == COILED else None,
        }


# --------------------------------------------------------------------------------------------------
# What this session says (``--kind``, the panel, the sidebar, Coiled's keyword ``scheduler_port``)


@dataclass(frozen=True)
class SessionPorts:
    kind: str | None = None
    scheduler_port: int | None = None


_session: dict[str, SessionPorts] = {}


def session_ports(cluster: str) -> SessionPorts:
    return _session.get(cluster, SessionPorts())


def set_session(cluster: str, ports: SessionPorts) -> None:
    """Make ``ports`` (already validated) what this session says for ``cluster``."""
    if ports == SessionPorts():
        _session.pop(cluster, None)
    else:
        _session[cluster] = ports


def forget() -> None:
    """Drop what every cluster's session says (a reset of the whole session)."""
    _session.clear()


# --------------------------------------------------------------------------------------------------
# Reading and checking values


def parse_kind(value, *, where: str = "the kind of cluster") -> str:
    """``coiled`` or ``dask`` (case and spaces ignored); anything else is one sentence."""
    word = value.strip().lower() if isinstance(value, str) else value
    if word in KINDS:
        return word
    close = difflib.get_close_matches(str(word), KINDS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise IngressError(
        [
            f"{where} is {excerpt(value)}; {hint}use 'coiled' (a coiled.Cluster: scheduler on "
            f"{COILED_SCHEDULER} by default) or 'dask' (a plain Dask cluster: {DASK_SCHEDULER} "
            f"and {DASK_DASHBOARD})."
        ]
    )


def parse_port(value, *, where: str) -> int:
    """A TCP port 1-65535: an int or a digit string; booleans, floats and the rest are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        number = None
    elif isinstance(value, int):
        number = value
    else:
        text = value.strip()
        number = int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else None
    if number is None or not 1 <= number <= 65535:
        raise IngressError([f"{where} is {excerpt(value)}; write a port number like 443 or 8786."])
    return number


def _flag(value, *, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise IngressError([f"{where} is {excerpt(value)}; write true or false."])


# --------------------------------------------------------------------------------------------------
# Resolution


def model(cluster: str | None = None, *, kind: str | None = None) -> PortModel:
    """The port model of ``cluster``: ``kind`` if given (one call's choice), else this session's, else
    Dask's ``coiled-jupyter.cluster-kind``, else ``coiled``. Coiled's ports are read as Coiled's
    client reads them: ``coiled.scheduler_port`` (or the session's keyword ``scheduler_port``) and
    ``coiled.use_dashboard_https`` from Dask's config."""
    from .settings import SESSION, option

    if cluster is None:
        cluster = str(option("cluster"))
    here = session_ports(cluster)
    session_origin = f"notebook session ({SESSION.detail})"
    if kind is not None:
        kind, kind_origin = parse_kind(kind), "this call"
    elif here.kind is not None:
        kind, kind_origin = here.kind, session_origin
    else:
        kind, kind_origin = _config_kind()
    if kind == DASK:
        return PortModel(
            DASK, kind_origin, DASK_SCHEDULER, _BUILT_IN, DASK_DASHBOARD, False, _BUILT_IN
        )
    import dask.config

    if here.scheduler_port is not None:
        scheduler, scheduler_origin = here.scheduler_port, session_origin
    else:
        configured = dask.config.get(SCHEDULER_PORT_KEY, None)
        if configured is None:
            scheduler, scheduler_origin = COILED_SCHEDULER, _COILED_DEFAULT
        else:
            where = f"{SCHEDULER_PORT_KEY} in Dask's config"
            scheduler, scheduler_origin = parse_port(configured, where=where), "dask config"
    https_value = dask.config.get(DASHBOARD_HTTPS_KEY, None)
    if https_value is None:
        https, https_origin = True, _COILED_DEFAULT
    else:
        https = _flag(https_value, where=f"{DASHBOARD_HTTPS_KEY} in Dask's config")
        https_origin = "dask config"
    dashboard = scheduler if https else COILED_HTTP_DASHBOARD
    return PortModel(
        COILED, kind_origin, scheduler, scheduler_origin, dashboard, https, https_origin
    )


def _config_kind() -> tuple[str, str]:
    from .settings import option

    value = option(KIND_OPTION)
    if value is None:
        return COILED, _BUILT_IN
    variable = next(
        (k for k in os.environ if k.upper() == "DASK_COILED_JUPYTER__CLUSTER_KIND"), None
    )
    origin = f"dask config (${variable})" if variable is not None else "dask config"
    return parse_kind(value, where=f"{KIND_KEY} in Dask's config"), origin
