"""Benchmark: compaction of 100 / 1,000 / 10,000 rules, and 2,000 pasted addresses end to end.

Not a test: it prints numbers and asserts nothing about timing. Each figure is the best of ``--reps``
runs (the machine may be shared), as wall-clock and CPU seconds of this process.

* ``compaction``: :func:`coiled_jupyter.rules.compaction` of n rules, for three shapes of input:
  scattered single addresses on two ports (nothing merges but the ports), adjacent addresses that
  collapse into a few networks, and addresses of which most lie inside a few wider networks.
* ``pasted``: addresses pasted as a YAML rule list, as in a ``%%coiled_ingress`` cell: 2,000 of them
  (4,000 rules) are refused before they are read; 500 (1,000 rules) are parsed into the session
  (``session.set_settings``, which also judges reachability), then made the rules as they would be
  sent (``reconcile.declared``: compaction and the quota check, which refuses them).

Run: ``make bench`` or ``python benchmarks/bench_compaction.py [--reps N]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import sys
import tempfile
import time

from _tables import table  # beside this script

SIZES = (100, 1_000, 10_000)


def scattered(n: int, rng: random.Random) -> list:
    from coiled_jupyter.rules import Rule

    addresses = rng.sample(range(1 << 24, 223 << 24), n // 2)
    return [
        Rule("tcp", port, port, f"{ipaddress.IPv4Address(a)}/32")
        for a in addresses
        for port in (8786, 8787)
    ]


def adjacent(n: int, rng: random.Random) -> list:
    from coiled_jupyter.rules import Rule

    base = int(ipaddress.IPv4Address("10.0.0.0"))
    rules = [Rule("tcp", 8786, 8787, f"{ipaddress.IPv4Address(base + i)}/32") for i in range(n)]
    rng.shuffle(rules)
    return rules


def nested(n: int, rng: random.Random) -> list:
    from coiled_jupyter.rules import Rule

    wide = [Rule("tcp", 8000, 9000, f"10.{k}.0.0/16", f"site {k}") for k in range(10)]
    inside = [
        Rule("tcp", 8786, 8787, f"10.{rng.randrange(10)}.{rng.randrange(256)}.{i % 256}/32", "x")
        for i in range(n - len(wide))
    ]
    return wide + inside


def best(reps: int, run) -> tuple[float, float, object]:
    """The fastest of ``reps`` runs: (wall seconds, CPU seconds, the result of the last run)."""
    walls, cpus, result = [], [], None
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


def compaction_rows(reps: int) -> list[list]:
    from coiled_jupyter.rules import compaction

    rng = random.Random(9)
    rows = []
    for shape in (scattered, adjacent, nested):
        for n in SIZES:
            rules = shape(n, rng)
            wall, cpu, found = best(reps, lambda: compaction(rules))
            rows.append(
                [
                    shape.__name__,
                    f"{len(rules):,}",
                    f"{len(found.rules):,}",
                    f"{len(found.covered):,}",
                    f"{wall * 1000:.0f}",
                    f"{cpu * 1000:.0f}",
                ]
            )
    return rows


def pasted_rows(reps: int) -> list[list]:
    from coiled_jupyter import session
    from coiled_jupyter.errors import CoiledJupyterError
    from coiled_jupyter.provision import reconcile

    rng = random.Random(7)

    def paste(count: int) -> str:
        addresses = rng.sample(range(1 << 24, 223 << 24), count)
        return "\n".join(
            f"- ports: [8786, 8787]\n  cidr: {ipaddress.IPv4Address(a)}" for a in addresses
        )

    def refused(step) -> str:
        try:
            step()
        except CoiledJupyterError as error:
            return str(error)
        return "accepted"

    rows = []
    many, some = paste(2000), paste(500)
    wall, cpu, said = best(reps, lambda: refused(lambda: session.set_settings(many)))
    rows.append(["2,000 addresses: set_settings (refused before it is read)", wall, cpu, said])
    wall, cpu, said = best(reps, lambda: refused(lambda: session.set_settings(some)))
    rows.append(["500 addresses: set_settings (parse, judge reachability)", wall, cpu, said])
    send = lambda: refused(lambda: reconcile.declared(session.effective_settings()))  # noqa: E731
    wall, cpu, said = best(reps, send)
    rows.append(["500 addresses: declared (compact, quota check)", wall, cpu, said])
    return [[step, f"{wall:.3f}", f"{cpu:.3f}", said[:60]] for step, wall, cpu, said in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    # Settings of this run only: an empty Dask config folder, and no public-address lookup.
    os.environ["DASK_CONFIG"] = tempfile.mkdtemp(prefix="bench-compaction-")
    os.environ["DASK_COILED_JUPYTER__PUBLIC_IP__SERVICES"] = "[]"
    os.environ["DASK_COILED_JUPYTER__PUBLIC_IP__SERVICES_IPV6"] = "[]"
    print(f"python {sys.version.split()[0]}, best of {args.reps}\n")
    print(
        table(
            ["input", "rules", "sent", "covered", "wall ms", "cpu ms"],
            compaction_rows(args.reps),
        )
    )
    print("\npasted addresses, seconds:\n")
    print(table(["step", "wall s", "cpu s", "answer"], pasted_rows(args.reps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
