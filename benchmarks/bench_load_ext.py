"""Benchmark: cold start of ``%load_ext coiled_jupyter``, beside ``import coiled``.

Not a test: it prints numbers and ratios and asserts nothing about timing.

Every measurement is a fresh Python process (a cold start, as in a new notebook kernel), run several
times with the variants interleaved, and the median is reported:

* ``python -c "pass"`` and ``python -c "import IPython"``: the interpreter and the IPython baseline;
* an IPython ``InteractiveShell`` alone (a second baseline), and ``%load_ext coiled_jupyter`` in one,
  timed inside the process, with the heavy modules loaded by then;
* the same, followed by the first ``%coiled_ingress`` table (in its own processes, against a sandbox
  moto server started once for this run, so that no child starts its own);
* the same shell and a plain ``import coiled_jupyter`` (what load_ext imports before the magics);
* the same shell and ``import coiled`` (the real Coiled client), and ``python -c "import coiled"``.

load_ext is reported as the increment over the ``import IPython`` baseline, measured from outside
(wall clock of the whole process), and as the time of the magic itself inside the process.

Run: ``make bench`` or ``python benchmarks/bench_load_ext.py [--reps N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _tables import table  # beside this script

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("boto3", "botocore", "moto", "distributed", "dask", "coiled", "ipywidgets", "yaml")
MARK = "@@BENCH@@"

# A shell as a notebook kernel has one, then one step timed inside the process.
_IN_SHELL = r"""
import contextlib, io, json, sys, time
start = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
out = {"shell_s": time.perf_counter() - start}
step = sys.argv[1]
start = time.perf_counter()
try:
    if step == "shell":
        pass
    elif step == "load_ext":
        shell.run_line_magic("load_ext", "coiled_jupyter")
    elif step == "package":
        import coiled_jupyter
    elif step == "coiled":
        import coiled
    out["ok"] = True
except BaseException as error:
    out["ok"] = False
    out["error"] = f"{type(error).__name__}: {error}"
out["step_s"] = time.perf_counter() - start
out["heavy"] = sorted(m for m in HEAVY if m in sys.modules)
if step == "load_ext" and out["ok"] and sys.argv[2] == "table":
    captured = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        result = shell.run_cell("%coiled_ingress")
    out["table_s"] = time.perf_counter() - start
    out["table_ok"] = bool(result.success)
    if not result.success:
        error = result.error_in_exec or result.error_before_exec
        out["table_error"] = f"{type(error).__name__}: {error}"
    out["table_chars"] = len(captured.getvalue())
    out["heavy_after_table"] = sorted(m for m in HEAVY if m in sys.modules)
print(MARK + json.dumps(out))
"""

VARIANTS = {
    "python": ("python -c 'pass'", ["-c", "pass"]),
    "ipython": ("python -c 'import IPython'", ["-c", "import IPython"]),
    "shell": ("IPython shell alone", None),
    "load_ext": ("shell + %load_ext coiled_jupyter", None),
    "load_ext_table": ("shell + %load_ext + first %coiled_ingress", None),
    "package": ("shell + import coiled_jupyter", None),
    "coiled_shell": ("shell + import coiled", None),
    "coiled": ("python -c 'import coiled'", ["-c", "import coiled"]),
}


def child_argv(variant: str) -> list[str]:
    fixed = VARIANTS[variant][1]
    if fixed is not None:
        return [sys.executable, *fixed]
    step = {
        "shell": "shell",
        "load_ext": "load_ext",
        "load_ext_table": "load_ext",
        "package": "package",
        "coiled_shell": "coiled",
    }[variant]
    code = f"HEAVY = {HEAVY!r}\nMARK = {MARK!r}\n{_IN_SHELL}"
    return [sys.executable, "-c", code, step, "table" if variant == "load_ext_table" else "-"]


def run_once(variant: str, env: dict) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        child_argv(variant), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    wall = time.perf_counter() - start
    out: dict = {"wall_s": wall, "rc": done.returncode}
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            out.update(json.loads(line[len(MARK) :]))
    if done.returncode != 0:
        out["ok"] = False
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        out.setdefault("error", f"exit {done.returncode}: {tail}")
    return out


def median_ms(samples: list[dict], key: str) -> float | None:
    values = [s[key] for s in samples if key in s]
    return statistics.median(values) * 1000 if values else None


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"


def versions(env: dict) -> str:
    code = (
        "import importlib.metadata as m\n"
        "for p in ('ipython', 'coiled', 'dask', 'boto3', 'moto'):\n"
        "    try: print(p, m.version(p))\n"
        "    except m.PackageNotFoundError: print(p, 'not installed')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return ", ".join(done.stdout.split("\n")[:-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="runs per variant (default 7)")
    parser.add_argument(
        "--no-table", action="store_true", help="skip the time to the first %%coiled_ingress table"
    )
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="coiled-jupyter-bench-")
    state = Path(tmp.name) / "sandbox"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DASK_COILED")}
    env.update(
        {
            # This checkout, whether or not it is installed; no user IPython profile or Dask config.
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "IPYTHONDIR": str(Path(tmp.name) / "ipython"),
            "DASK_CONFIG": str(Path(tmp.name) / "dask-config"),
            "DASK_COILED_JUPYTER__BACKEND": "sandbox",
            "DASK_COILED_JUPYTER__SANDBOX__STATE_DIR": str(state),
            "DASK_COILED_JUPYTER__PUBLIC_IP__SERVICES": "[]",
            "DASK_COILED_JUPYTER__PUBLIC_IP__SERVICES_IPV6": "[]",
        }
    )

    print("bench_load_ext: cold start of %load_ext coiled_jupyter and of import coiled")
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs ({platform.machine()}); "
        f"{versions(env)}"
    )

    # Is `coiled` importable at all? Without it the comparison rows are skipped, the rest still runs.
    probe = run_once("coiled", env)
    have_coiled = probe["rc"] == 0
    if not have_coiled:
        print(
            f"NOTE: import coiled fails here ({probe.get('error')}); install the bench extra "
            "(pip install 'coiled_jupyter[bench]'). Its rows are skipped."
        )
    probe = run_once("load_ext", env)
    have_magics = probe.get("ok", False)
    if not have_magics:
        missing = not (ROOT / "coiled_jupyter" / "magics.py").exists()
        why = (
            "coiled_jupyter/magics.py does not exist yet; these rows fill in once it lands"
            if missing
            else "see the error"
        )
        print(
            f"NOTE: %load_ext coiled_jupyter FAILED: {probe.get('error')} ({why}). "
            "Measured meanwhile: shell + import coiled_jupyter (what load_ext imports first)."
        )

    server = None
    want_table = have_magics and not args.no_table
    if want_table:
        import dask.config

        sys.path.insert(0, str(ROOT))
        from coiled_jupyter.provision import sandbox

        with dask.config.set({"coiled-jupyter.sandbox.state-dir": str(state)}):
            server = sandbox.ensure()
        print(
            f"sandbox moto server for the %coiled_ingress tables: {server.url} (pid {server.pid})"
        )

    variants = [
        v
        for v in VARIANTS
        if (have_coiled or v not in ("coiled", "coiled_shell"))
        and (want_table or v != "load_ext_table")
    ]
    samples: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        for rep in range(args.reps):
            print(f"run {rep + 1}/{args.reps} ...", flush=True)
            for variant in variants:  # interleaved, so that drift hits every variant alike
                samples[variant].append(run_once(variant, env))
    finally:
        if server is not None:
            with dask.config.set({"coiled-jupyter.sandbox.state-dir": str(state)}):
                sandbox.stop()
            print("sandbox moto server stopped")

    wall = {v: median_ms(s, "wall_s") for v, s in samples.items()}
    step = {v: median_ms([x for x in s if x.get("ok")], "step_s") for v, s in samples.items()}
    shell = {v: median_ms(s, "shell_s") for v, s in samples.items()}
    rows = []
    for variant, (label, fixed) in VARIANTS.items():
        if variant not in samples:
            why = (
                "not run (%load_ext does not work yet, or --no-table)"
                if variant == "load_ext_table"
                else "coiled is not installed"
            )
            rows.append([label, "n/a", "n/a", "n/a", why])
            continue
        failed = [x for x in samples[variant] if not x.get("ok", x["rc"] == 0)]
        note = (
            f"FAILED {len(failed)}/{len(samples[variant])}: {failed[0].get('error')}"
            if failed
            else ""
        )
        if variant == "load_ext_table" and not note:
            note = f"first table {fmt(median_ms(samples[variant], 'table_s'))} ms after load_ext"
            bad = [x for x in samples[variant] if not x.get("table_ok")]
            if bad:
                note = (
                    f"table FAILED {len(bad)}/{len(samples[variant])}: {bad[0].get('table_error')}"
                )
        rows.append(
            [
                label,
                fmt(wall[variant]),
                "" if fixed else fmt(shell[variant]),
                "" if fixed else fmt(step[variant]),
                note,
            ]
        )
    print(f"\nCold start, median of {args.reps} fresh processes (ms)\n")
    print(table(["variant", "process wall", "shell creation", "timed step", "note"], rows))

    base, shell_base = wall.get("ipython"), wall.get("shell")
    print(
        f"\nIPython baseline (python -c 'import IPython'): {fmt(base)} ms; IPython shell alone: "
        f"{fmt(shell_base)} ms; bare interpreter: {fmt(wall.get('python'))} ms"
    )
    incr = []
    if have_magics:
        incr.append(
            [
                "%load_ext coiled_jupyter",
                fmt(wall["load_ext"] - base),
                fmt(wall["load_ext"] - shell_base),
                fmt(step["load_ext"]),
            ]
        )
    else:
        incr.append(["%load_ext coiled_jupyter", "n/a (magics.py missing)", "n/a", "n/a"])
    incr.append(
        [
            "import coiled_jupyter",
            fmt(wall["package"] - base),
            fmt(wall["package"] - shell_base),
            fmt(step["package"]),
        ]
    )
    if have_coiled:
        incr.append(
            [
                "import coiled",
                fmt(wall["coiled_shell"] - base),
                fmt(wall["coiled_shell"] - shell_base),
                fmt(step["coiled_shell"]),
            ]
        )
        incr.append(
            [
                "python -c 'import coiled' - python -c 'pass'",
                fmt(wall["coiled"] - wall["python"]),
                "",
                "",
            ]
        )
    print(
        "\nIncrement (ms): process wall minus the 'import IPython' baseline (so it includes "
        "creating the shell), minus the shell-alone process, and the step alone timed inside "
        "the process. Differences of medians of separate processes: a few ms of noise, can be "
        "slightly negative.\n"
    )
    print(table(["what", "wall - import IPython", "wall - shell alone", "step in process"], incr))

    if have_coiled:
        ratios = []
        mine = "load_ext" if have_magics else "package"
        label = "%load_ext coiled_jupyter" if have_magics else "import coiled_jupyter (proxy)"
        ratios.append(
            [f"{label} / import coiled, in process", f"{step[mine] / step['coiled_shell']:.3f}x"]
        )
        ratios.append(
            [
                f"{label} / import coiled, wall increment over baseline",
                f"{(wall[mine] - base) / (wall['coiled_shell'] - base):.3f}x",
            ]
        )
        ratios.append(
            [
                f"whole process: shell + {label.split(' (')[0]} / shell + import coiled",
                f"{wall[mine] / wall['coiled_shell']:.2f}x",
            ]
        )
        print("\nRatios\n")
        print(table(["ratio", "value"], ratios))

    print("\nHeavy modules in sys.modules (of " + ", ".join(HEAVY) + ")")
    for variant, label in (
        ("load_ext", "after %load_ext coiled_jupyter"),
        ("package", "after import coiled_jupyter"),
        ("coiled_shell", "after import coiled"),
    ):
        if variant not in samples:
            continue
        ok = [x for x in samples[variant] if x.get("ok")]
        found = sorted({m for x in ok for m in x.get("heavy", [])})
        print(
            f"  {label:32}: {', '.join(found) if found else 'none'}"
            if ok
            else f"  {label:32}: n/a (it failed)"
        )

    if want_table:
        tables = [x for x in samples["load_ext_table"] if "table_s" in x]
        good = [x for x in tables if x.get("table_ok")]
        if good:
            first = statistics.median(x["step_s"] + x["table_s"] for x in good) * 1000
            print(
                f"\nFirst %coiled_ingress table: median {fmt(median_ms(good, 'table_s'))} ms after "
                f"load_ext, {first:.0f} ms from load_ext to the table; heavy modules by then: "
                f"{', '.join(sorted({m for x in good for m in x['heavy_after_table']}))}"
            )
        else:
            error = tables[0].get("table_error") if tables else "not run"
            print(f"\nFirst %coiled_ingress table: FAILED ({error})")
    elif not have_magics:
        print("\nFirst %coiled_ingress table: n/a (%load_ext coiled_jupyter does not work yet)")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
