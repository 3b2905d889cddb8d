"""Benchmark: how long ``python -m coiled_jupyter.provision.sandbox stop`` takes, as a person runs it.

Not a test: it prints numbers and asserts nothing about timing.

A "kernel" process starts the sandbox (the moto server is its child) and lives on, as a notebook's
kernel does. Then, in a state folder of this run's own, the stop command is run and timed (wall
clock, interpreter start-up included) in three cases:

* the kernel lives and the server answers: stop ends it, and the server stays a zombie of the kernel;
* the server was killed while the kernel lives: a zombie before stop starts;
* the kernel was killed: the server lives on, reparented.

Before issue 22 item 8 the first case took 15 s (10 s for the zombie to "exit", then SIGKILL and 5 s
more). ``python -c pass`` is timed too, as the floor of any command.

Run: ``python benchmarks/bench_sandbox_stop.py [--reps N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _tables import table  # beside this script

ROOT = Path(__file__).resolve().parents[1]
KERNEL = (
    "import sys\n"
    "from coiled_jupyter.provision import sandbox\n"
    "print(sandbox.ensure().pid, flush=True)\n"
    "sys.stdin.read()\n"
)
CASES = ("the kernel lives", "the server was killed (a zombie)", "the kernel was killed")


def timed(command: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds and CPU seconds (user + system) of one run of ``command``, and what it said."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout.strip() or done.stderr.strip()


def one(case: str, env: dict) -> tuple[float, float, str]:
    kernel = subprocess.Popen(
        [sys.executable, "-c", KERNEL], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    pid = int(kernel.stdout.readline())
    try:
        if case == "the server was killed (a zombie)":
            os.killpg(pid, signal.SIGKILL)
            while Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
                time.sleep(0.01)
        elif case == "the kernel was killed":
            kernel.kill()
            kernel.wait()
        return timed([sys.executable, "-m", "coiled_jupyter.provision.sandbox", "stop"], env)
    finally:
        kernel.kill()
        kernel.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    reps = parser.parse_args().reps
    with tempfile.TemporaryDirectory(prefix="coiled-jupyter-bench-stop-") as folder:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DASK_COILED_JUPYTER__SANDBOX__STATE_DIR": folder,
        }
        rows = []
        for case in ("python -c pass (the floor)", *CASES):
            if case in CASES:
                runs = [one(case, env) for _ in range(reps)]
            else:
                runs = [timed([sys.executable, "-c", "pass"], env) for _ in range(reps)]
            rows.append(
                [
                    case,
                    f"{statistics.median(r[0] for r in runs):.2f}",
                    f"{statistics.median(r[1] for r in runs):.2f}",
                    runs[-1][2],
                ]
            )
    print(
        f"sandbox stop, median of {reps}, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(table(["case", "wall s", "CPU s", "said"], rows))


if __name__ == "__main__":
    main()
