"""Benchmark: time to a first rehearsal verdict, and to a re-check after a rule change.

Not a test: it prints numbers and asserts nothing about timing. Needs root, nftables and iproute2
(as the rehearsal itself); everything runs in network namespaces linked only to each other.

* first verdict: from nothing to the first measured verdict of the seeds' two-CIDR example: the
  namespaces built, the scheduler and its worker started, the rules loaded, a client placed inside
  10.1.0.0/16, and a real ``distributed.Client`` connected through the firewall;
* re-check: the rules changed (8786 now from 10.32.0.0/16 instead), loaded, the client moved inside
  10.32.0.0/16, and a Client connected again;
* full table: every source and port of the example (a Client and an HTTP GET each, at once); the
  refused ones wait for their timeout (3 s for a Client, 2 s for the GET), which bounds it.

Goals (issue 20): first verdict under 5 s, re-check under 1 s, on a quiet 2-core machine.
Run: ``python benchmarks/bench_rehearsal.py [--reps N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from _tables import table  # beside this script

from coiled_jupyter.rehearsal.namespaces import Rehearsal, unavailable
from coiled_jupyter.rehearsal.nft import ruleset
from coiled_jupyter.rehearsal.rehearse import measure, permissions, sources
from coiled_jupyter.rules import Rule

TWO_CIDRS = [Rule("tcp", 8786, 8786, "10.1.0.0/16"), Rule("tcp", 8787, 8787, "10.32.0.0/16")]
CHANGED = [Rule("tcp", 8786, 8786, "10.32.0.0/16"), Rule("tcp", 8787, 8787, "10.32.0.0/16")]


def verdict(rehearsal: Rehearsal, rules: list[Rule], address: str) -> str:
    rehearsal.load(ruleset(permissions(rules)).text)
    (namespace,) = rehearsal.place([address])
    return rehearsal.probe(namespace, "client", 4, 3.0).verdict


def once() -> dict[str, float]:
    started = time.perf_counter()
    rehearsal = Rehearsal(8786, 8787).start()
    try:
        built = time.perf_counter() - started
        assert verdict(rehearsal, TWO_CIDRS, "10.1.0.5") == "yes"
        first = time.perf_counter() - started
        started = time.perf_counter()
        assert verdict(rehearsal, CHANGED, "10.32.0.5") == "yes"
        recheck = time.perf_counter() - started
        chosen, _ = sources(TWO_CIDRS)
        started = time.perf_counter()
        rows = measure(rehearsal, TWO_CIDRS, chosen)
        full = time.perf_counter() - started
        assert all(r.agree for r in rows)
    finally:
        rehearsal.close()
    return {"built": built, "first": first, "recheck": recheck, "full": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(reason)
        return
    runs = [once() for _ in range(args.reps)]

    def median(key: str) -> str:
        return f"{statistics.median(r[key] for r in runs):.2f} s"

    print(
        f"rehearsal, {args.reps} runs, median; {platform.node()} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        table(
            ["step", "time", "goal"],
            [
                ["namespaces + scheduler and worker started", median("built"), ""],
                ["first verdict (Client through the firewall)", median("first"), "< 5 s"],
                ["re-check after a rule change", median("recheck"), "< 1 s"],
                ["full two-CIDR table (3 sources x 2 ports)", median("full"), ""],
            ],
        )
    )


if __name__ == "__main__":
    main()
