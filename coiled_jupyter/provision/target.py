"""The cluster being described: backend, region, VPC and name, validated before anything is called.

Resolving a target starts nothing: the sandbox's address is only looked up (and the sandbox started)
when :meth:`Target.connected` is called by an operation that talks to the cloud.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..errors import CoiledJupyterError
from ..rules import IngressError
from ..settings import default_cluster, option
from ..strict_yaml import excerpt

BACKENDS = ("sandbox", "aws")
# Matched whole (fullmatch): with match(), "$" lets a final newline through ("us-east-1\n" read from
# a file), which then breaks the signed request in the HTTP client.
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_VPC_ID = re.compile(r"vpc-[0-9a-f]{8}([0-9a-f]{9})?")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")


@dataclass(frozen=True)
class Target:
    """One cluster's group: backend, region, VPC and cluster name; every table names all of them."""

    backend: str
    region: str
    cluster: str
    vpc_id: str | None = None
    endpoint_url: str | None = field(default=None, compare=False)

    def connected(self, *, progress: Callable[[str], None] | None = None) -> Target:
        """This target with its endpoint known: for the sandbox, its server (started on first use).

        A start takes seconds, so ``progress`` (if given) hears a sentence first; nothing is printed
        here. Without moto (a plain ``pip install coiled_jupyter``) no start is attempted: one
        sentence names the command that installs it.
        """
        if self.backend != "sandbox" or self.endpoint_url is not None:
            return self
        from . import sandbox

        server = sandbox.running()
        if server is None:
            if sandbox.recorded() is None:  # else it is busy: ensure() says so, starts nothing
                require_moto()
                if progress is not None:
                    progress("starting the local sandbox (moto) ...")
            server = sandbox.ensure()
        return replace(self, endpoint_url=server.url)

    def connection(self):
        from .aws import Connection

        if self.backend == "sandbox":
            from .sandbox import DUMMY_KEY

            return Connection(
                region=self.region,
                endpoint_url=self.connected().endpoint_url,
                access_key_id=DUMMY_KEY,
                secret_access_key=DUMMY_KEY,
                direct=True,
            )
        return Connection(region=self.region)

    @property
    def backend_label(self) -> str:
        if self.backend == "sandbox":
            where = f" at {self.endpoint_url}" if self.endpoint_url else ""
            return f"sandbox (local moto server{where}, not AWS)"
        return "aws"


def require_moto() -> None:
    """Refuse, with the command that fixes it, to start the sandbox without moto installed."""
    import importlib.util

    if importlib.util.find_spec("moto") is None:
        raise CoiledJupyterError(
            "the sandbox backend needs moto, which is not installed; run "
            "pip install 'coiled_jupyter[sandbox]' (or set coiled-jupyter.backend to aws)."
        )


def validate_target(cluster=None, *, backend=None, region=None, vpc_id=None) -> tuple:
    """Check every value a person can type for a target, before anything starts or is called."""
    backend = backend if backend is not None else option("backend")
    problems = []
    if backend not in BACKENDS:
        problems.append(
            f"backend {excerpt(backend)} is not known; use 'sandbox' (local, no account) or 'aws'."
        )
    cluster = cluster if cluster is not None else default_cluster()
    if isinstance(cluster, str) and not cluster.strip():
        problems.append(
            "cluster name is empty; give the cluster's name (an empty name never means the "
            "default cluster)."
        )
    elif not isinstance(cluster, str) or not _CLUSTER_NAME.fullmatch(cluster):
        problems.append(
            f"cluster name {excerpt(cluster)} is not valid; use up to 63 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit."
        )
    vpc_id = vpc_id if vpc_id is not None else option("vpc-id")
    if vpc_id is not None and (not isinstance(vpc_id, str) or not _VPC_ID.fullmatch(vpc_id)):
        problems.append(
            f"VPC id {excerpt(vpc_id)} is not valid; it looks like 'vpc-0123456789abcdef0'."
        )
    region = region if region is not None else option("region")
    problems += region_problems(region)
    if problems:
        raise IngressError(problems)
    return backend, cluster, vpc_id, region


def region_problems(region, where: str = "region") -> list[str]:
    """The sentence for a region that is not one (``None``: not set, no problem)."""
    if region is None or (isinstance(region, str) and _REGION.fullmatch(region)):
        return []
    return [f"{where} {excerpt(region)} is not valid; it looks like 'us-east-1'."]


def target(cluster=None, *, backend=None, region=None, vpc_id=None) -> Target:
    """Resolve a cluster name (and optional overrides) into a :class:`Target`; nothing is started."""
    backend, cluster, vpc_id, region = validate_target(
        cluster, backend=backend, region=region, vpc_id=vpc_id
    )
    if backend == "sandbox":
        from .sandbox import REGION

        return Target("sandbox", region or REGION, cluster, vpc_id)
    if region is None:
        from .aws import default_region

        region = default_region()
        if region is None:
            raise IngressError(
                [
                    "no AWS region is set; set coiled-jupyter.region in Dask's config "
                    "or AWS_DEFAULT_REGION."
                ]
            )
        problems = region_problems(region, "the AWS region (AWS_DEFAULT_REGION or your profile)")
        if problems:
            raise IngressError(problems)
    return Target("aws", region, cluster, vpc_id)
