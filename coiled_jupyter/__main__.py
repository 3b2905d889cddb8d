"""``python -m coiled_jupyter demo``: the main job on the built-in sandbox.

It applies the two-CIDR example from Coiled's documentation ("Configuring firewalls": the client
reaches the scheduler on 8786 from one network, the dashboard on 8787 is open to another) to a sandbox
cluster, exactly as the page passes it to ``coiled.Cluster(backend_options=...)``, applies it a second
time to show that nothing changes, and prints the rule table as the cloud reports it. The page's
ports are a plain Dask cluster's (8786/8787), so the demo judges the rules as a ``dask`` cluster's
(a Coiled cluster of today listens on 443: see notebooks/coiled-keywords.ipynb). Nothing reaches
AWS: the sandbox is a local moto server, stopped at the end unless it was already running.
"""

from __future__ import annotations

import sys

# Coiled's page, verbatim: backend_options={"ingress": [...]}.
EXAMPLE = [
    {"ports": [8786], "cidr": "10.1.0.0/16"},  # client -> scheduler
    {"ports": [8787], "cidr": "10.32.0.0/16"},  # scheduler dashboard
]


def demo(cluster: str = "demo") -> int:
    import dask.config

    from . import session

    with dask.config.set(
        {"coiled-jupyter.backend": "sandbox", "coiled-jupyter.cluster-kind": "dask"}
    ):
        was_running = session.sandbox_running()
        try:
            first = session.apply(cluster, backend_options={"ingress": EXAMPLE})
            print(first)
            print()
            second = session.apply(cluster, backend_options={"ingress": EXAMPLE})
            print("second apply:", "no change" if not second.changed else "CHANGED (a bug)")
        finally:
            if not was_running:
                session.stop_sandbox()
    return 0 if not second.changed else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["demo"]:
        return demo(*args[1:2])
    print("usage: python -m coiled_jupyter demo [CLUSTER]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
