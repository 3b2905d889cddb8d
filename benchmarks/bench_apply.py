"""Benchmark: latency and cloud calls of ``coiled_jupyter`` applies, beside dask-cloudprovider.

Not a test: it prints numbers and ratios and asserts nothing about timing.

On a moto server started for this run only (the project's sandbox module, with a temporary state
folder, stopped at the end), for 1, 10 and 50 rules it measures

* fresh apply: a new cluster name, so the group is created (``reconcile.apply``);
* no-change apply: the same rules again on an existing group;
* one-rule-changed apply: one CIDR of the rule set swapped (one add and one remove);

each with its median latency, the EC2 API calls (botocore ``before-call`` events on the cached client
the core uses) and the HTTP requests sent (``before-send``; retries would show here). Settings are
resolved once, outside the timed part, and passed with ``settings=``; one extra line times the full
default path (``backend_options=``: settings resolution, the account layer's SSM read, then apply).

In the same run and on the same server it times dask-cloudprovider's creation of its ``dask-default``
group (``dask_cloudprovider.aws.helper``, aiobotocore), the only firewall work that library does: it
never reconciles an existing group, so it has no "no change" or "update" case.

Run: ``make bench`` or ``python benchmarks/bench_apply.py [--reps N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _tables import table  # beside this script

RULE_COUNTS = (1, 10, 50)
PORTS = [8786, 8787]
NA = "n/a"

# Keep the user's own Dask config files and DASK_COILED* variables out of the measurement: settings
# are resolved from an empty config folder (set before dask is imported anywhere).
_TMP = tempfile.TemporaryDirectory(prefix="coiled-jupyter-bench-")
os.environ["DASK_CONFIG"] = str(Path(_TMP.name) / "dask-config")
_IGNORED_ENV = sorted(k for k in os.environ if k.upper().startswith("DASK_COILED"))
for _key in _IGNORED_ENV:
    del os.environ[_key]

# Measure this checkout, also when the package is not installed into the environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dask.config  # noqa: E402

from coiled_jupyter import session  # noqa: E402
from coiled_jupyter.provision import aws, reconcile, sandbox  # noqa: E402
from coiled_jupyter.provision.target import target  # noqa: E402
from coiled_jupyter.rules import compact, parse_ingress  # noqa: E402
from coiled_jupyter.settings import effective_settings  # noqa: E402

# --------------------------------------------------------------------------------------------------
# Rule sets


# The columns of both latency tables (the main paths and the other paths).
LATENCY_COLUMNS = [
    "scenario",
    "tool",
    "rules",
    "median ms",
    "min-max ms",
    "in API calls ms",
    "API calls",
    "HTTP sends",
    "calls (first repetition)",
]


def rule_set(n: int, changed: bool = False) -> list[dict]:
    """``n`` rules on 8786-8787 from distinct /16s that never collapse into a wider network.

    10.0/16 and 10.2/16 are not siblings (10.0/16 + 10.1/16 would collapse into 10.0/15), so even
    second octets keep every rule apart. ``changed`` swaps the last network for 192.168.0.0/24.
    """
    rules = [{"ports": PORTS, "cidr": f"10.{2 * i}.0.0/16"} for i in range(n)]
    if changed:
        rules[-1] = {"ports": PORTS, "cidr": "192.168.0.0/24"}
    compacted = compact(parse_ingress(rules))
    if len(compacted) != n:  # a setup error, not a timing check
        raise SystemExit(f"rule set of {n} compacts into {len(compacted)} rules; fix rule_set()")
    return rules


def explicit_settings(rules: list[dict]):
    """Settings resolved without the account store (no SSM read), as the timed applies get them."""
    return effective_settings({"ingress": rules}, account=lambda: None)


# --------------------------------------------------------------------------------------------------
# Counting calls


class Counter:
    """Counts API calls (``before-call``) and HTTP requests (``before-send``) of botocore clients."""

    def __init__(self):
        self.calls: list[str] = []
        self.sends = 0
        self.in_calls = 0.0  # seconds from before-call to after-call: botocore plus the server
        self._started: list[float] = []

    def attach(self, client, label: str) -> None:
        events = client.meta.events
        events.register("before-call", self._on_call, unique_id=f"bench-call-{label}")
        events.register("before-send", self._on_send, unique_id=f"bench-send-{label}")
        events.register("after-call", self._on_done, unique_id=f"bench-done-{label}")
        events.register("after-call-error", self._on_done, unique_id=f"bench-error-{label}")

    def _on_call(self, model=None, **_):
        self.calls.append(model.name if model is not None else "?")
        self._started.append(time.perf_counter())

    def _on_send(self, **_):
        self.sends += 1

    def _on_done(self, **_):
        if self._started:
            self.in_calls += time.perf_counter() - self._started.pop()

    def clear(self) -> None:
        self.calls = []
        self.sends = 0
        self.in_calls = 0.0
        self._started = []


class Sample:
    def __init__(self, seconds: float, calls: list[str], sends: int, in_calls: float = 0.0):
        self.seconds, self.calls, self.sends, self.in_calls = seconds, calls, sends, in_calls


def timed(counter: Counter, fn) -> tuple[Sample, object]:
    counter.clear()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return Sample(seconds, list(counter.calls), counter.sends, counter.in_calls), result


def summary(samples: list[Sample]) -> dict:
    """Median latency, and the call counts (with their spread if they were not all the same)."""

    def spread(values):
        low, high = min(values), max(values)
        return str(low) if low == high else f"{statistics.median(values):g} ({low}-{high})"

    return {
        "ms": statistics.median(s.seconds for s in samples) * 1000,
        "min_ms": min(s.seconds for s in samples) * 1000,
        "max_ms": max(s.seconds for s in samples) * 1000,
        "api_ms": statistics.median(s.in_calls for s in samples) * 1000,
        "calls": spread([len(s.calls) for s in samples]),
        "calls_n": statistics.median(len(s.calls) for s in samples),
        "sends": spread([s.sends for s in samples]),
        "ops": _ops(samples[0].calls),
        "n": len(samples),
    }


def _ops(calls: list[str]) -> str:
    short = {
        "DescribeSecurityGroups": "Describe",
        "CreateSecurityGroup": "Create",
        "AuthorizeSecurityGroupIngress": "Authorize",
        "RevokeSecurityGroupIngress": "Revoke",
        "UpdateSecurityGroupRuleDescriptionsIngress": "UpdateDescriptions",
        "DescribeSecurityGroupRules": "DescribeRules",
        "GetParameter": "SSM.GetParameter",
    }
    return ", ".join(short.get(c, c) for c in calls)


# --------------------------------------------------------------------------------------------------
# dask-cloudprovider


class CloudProvider:
    """dask-cloudprovider's default security group creation, on the same moto server.

    ``EC2Cluster`` reaches it through ``get_security_group(client, vpc)``: a ``DescribeSecurityGroups``
    by the name ``dask-default`` (a missing group raises, which it catches), then
    ``create_default_security_group``: ``CreateSecurityGroup`` and one ``AuthorizeSecurityGroupIngress``
    (TCP 8786-8787 from 0.0.0.0/0 and ::/0, all TCP from the group itself). The default VPC is looked
    up once beforehand, untimed: ``EC2Cluster`` needs it for its subnet anyway.
    """

    def __init__(self, url: str):
        from aiobotocore.session import get_session
        from dask_cloudprovider.aws import helper

        self.helper = helper
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.session = get_session()
        self.counter = Counter()
        self.client = None
        self._context = None
        self.vpc = None
        self.workaround = None
        import dask_cloudprovider

        self.version = getattr(dask_cloudprovider, "__version__", "?")

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def open(self) -> None:
        async def _open():
            self._context = self.session.create_client(
                "ec2",
                region_name=sandbox.REGION,
                endpoint_url=self.url,
                aws_access_key_id=sandbox.DUMMY_KEY,
                aws_secret_access_key=sandbox.DUMMY_KEY,
            )
            self.client = await self._context.__aenter__()
            self.counter.attach(self.client, "dcp")

        self.run(_open())

    def close(self) -> None:
        if self._context is not None:
            self.run(self._context.__aexit__(None, None, None))
        self.loop.close()

    def warm_up(self) -> None:
        """Find the default VPC, and find out whether ``get_security_group`` works as released."""
        self.vpc = self.run(self.helper.get_default_vpc(self.client))
        try:
            self.run(self.helper.get_security_group(self.client, self.vpc))
            self.workaround = None
        except RuntimeError as error:
            cause = error.__cause__
            self.workaround = (
                f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
            )
        self.delete()

    async def _create(self) -> str:
        if self.workaround is None:
            return await self.helper.get_security_group(self.client, self.vpc)
        # The released get_security_group() fails before any call (see warm_up); do what it means
        # to do: the same lookup, then create_default_security_group() with its tags argument.
        try:
            found = (
                await self.client.describe_security_groups(
                    GroupNames=[self.helper.DEFAULT_SECURITY_GROUP_NAME]
                )
            )["SecurityGroups"]
        except Exception:
            found = []
        if found:
            return found[0]["GroupId"]
        return await self.helper.create_default_security_group(
            self.client,
            self.helper.DEFAULT_SECURITY_GROUP_NAME,
            self.vpc,
            {"createdBy": "dask-cloudprovider"},
        )

    def create(self) -> tuple[Sample, str]:
        async def _timed():
            self.counter.clear()
            start = time.perf_counter()
            group_id = await self._create()
            seconds = time.perf_counter() - start
            return (
                Sample(
                    seconds, list(self.counter.calls), self.counter.sends, self.counter.in_calls
                ),
                group_id,
            )

        return self.run(_timed())

    def delete(self) -> None:
        """Remove ``dask-default`` (untimed) so that the next repetition creates it again."""

        async def _delete():
            response = await self.client.describe_security_groups(
                Filters=[
                    {"Name": "group-name", "Values": [self.helper.DEFAULT_SECURITY_GROUP_NAME]}
                ]
            )
            for group in response["SecurityGroups"]:
                await self.client.delete_security_group(GroupId=group["GroupId"])

        self.run(_delete())


def start_cloudprovider(url: str) -> tuple[CloudProvider | None, str | None]:
    try:
        provider = CloudProvider(url)
    except Exception as error:  # ImportError, or anything its import chain raises here
        return None, (
            f"dask-cloudprovider cannot be used here ({type(error).__name__}: {error}); "
            "install the bench extra: pip install 'coiled_jupyter[bench]'"
        )
    try:
        provider.open()
        provider.warm_up()
    except Exception as error:
        provider.close()
        return (
            None,
            f"dask-cloudprovider could not run against moto ({type(error).__name__}: {error})",
        )
    return provider, None


# --------------------------------------------------------------------------------------------------
# The rounds


def reset_and_warm(ec2, provider: CloudProvider | None) -> None:
    """Reset moto, then make one untimed call per client (moto rebuilds a backend on first use)."""
    sandbox.reset()
    ec2.describe_security_groups(MaxResults=5)
    if provider is not None:
        provider.warm_up()


def round_for(n: int, reps: int, counter: Counter, ec2, provider: CloudProvider | None) -> dict:
    reset_and_warm(ec2, provider)
    first, second = explicit_settings(rule_set(n)), explicit_settings(rule_set(n, changed=True))
    reconcile.apply(target(f"warm-{n}"), first)  # untimed: first create in a fresh backend

    fresh, dcp = [], []
    for rep in range(reps):
        sample, result = timed(counter, lambda: reconcile.apply(target(f"bench-{n}-{rep}"), first))
        if len(result.table.rules) != n + 1:  # setup check: n rules plus the group's own rule
            raise SystemExit(f"fresh apply of {n} rules read back {len(result.table.rules)} rules")
        fresh.append(sample)
        if provider is not None:
            sample, _ = provider.create()
            dcp.append(sample)
            provider.delete()

    cluster = f"bench-{n}-0"
    same = [timed(counter, lambda: reconcile.apply(target(cluster), first))[0] for _ in range(reps)]

    changed = []
    for rep in range(reps):
        settings = second if rep % 2 == 0 else first
        sample, result = timed(counter, lambda: reconcile.apply(target(cluster), settings))
        if (len(result.plan.add), len(result.plan.remove)) != (1, 1):
            raise SystemExit(f"the changed apply of {n} rules was not one add and one remove")
        changed.append(sample)
    if len(changed) % 2:
        reconcile.apply(target(cluster), first)

    # Client-side work that grows with the rules: the declared rules are compacted and checked
    # against the quota (desired_rules), once per apply.
    local = [timed(counter, lambda: reconcile.desired_rules(first))[0] for _ in range(reps)]

    return {
        "fresh": summary(fresh),
        "same": summary(same),
        "changed": summary(changed),
        "dcp": summary(dcp) if dcp else None,
        "desired_rules": summary(local),
    }


def described(n: int, words: str) -> list[dict]:
    return [{**rule, "description": f"{words} {i}"} for i, rule in enumerate(rule_set(n))]


def other_paths(reps: int, counter: Counter, ec2, n: int = 10, swap: int = 40) -> dict:
    """A description changed on ``n`` rules (planned as an update), and ``swap`` rules replaced by as
    many others, which crosses the quota of 60 (added in two steps around the removal)."""
    reset_and_warm(ec2, None)
    one, two = explicit_settings(described(n, "office")), explicit_settings(described(n, "VPN"))
    reconcile.apply(target("words"), one)
    words = []
    for rep in range(reps):
        settings = two if rep % 2 == 0 else one
        sample, result = timed(counter, lambda: reconcile.apply(target("words"), settings))
        if len(result.plan.update) != n or result.plan.add or result.plan.remove:
            raise SystemExit("the description change was not planned as updates only")
        words.append(sample)
    low = explicit_settings([{"ports": PORTS, "cidr": f"10.{2 * i}.0.0/16"} for i in range(swap)])
    high = explicit_settings(
        [{"ports": PORTS, "cidr": f"10.{2 * i}.0.0/16"} for i in range(swap, 2 * swap)]
    )
    reconcile.apply(target("swap"), low)
    swaps = []
    for rep in range(reps):
        settings = high if rep % 2 == 0 else low
        sample, result = timed(counter, lambda: reconcile.apply(target("swap"), settings))
        if not result.plan.add_later:
            raise SystemExit("the replacement across the quota did not go in steps")
        swaps.append(sample)
    return {"n": n, "swap": swap, "words": summary(words), "swaps": summary(swaps)}


_COLD = """
import json, time
start = time.perf_counter()
from coiled_jupyter import session
imported = time.perf_counter()
said = []
rules = {"ingress": [{"ports": [8786, 8787], "cidr": "10.1.0.0/16"}]}
first = session.apply("cold", backend_options=rules, progress=said.append)
applied = time.perf_counter()
session.apply("cold", backend_options=rules)
again = time.perf_counter()
from coiled_jupyter.provision import sandbox
sandbox.stop()
print(json.dumps({"import": imported - start, "first": applied - imported,
                  "second": again - applied, "changed": first.changed, "said": said}))
"""


def cold_first_apply(reps: int) -> dict:
    """A fresh process with a state folder of its own, so no sandbox runs yet: the first
    ``session.apply`` starts the sandbox (moto server, backend load) and creates the group."""
    import subprocess

    runs = []
    for rep in range(reps):
        folder = Path(_TMP.name) / f"cold-{rep}"
        (folder / "dask-config").mkdir(parents=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.upper().startswith("DASK_")},
            "DASK_CONFIG": str(folder / "dask-config"),
            "DASK_COILED_JUPYTER__SANDBOX__STATE_DIR": str(folder / "state"),
            "DASK_COILED_JUPYTER__PUBLIC_IP__SERVICES": "[]",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        try:
            done = subprocess.run(
                [sys.executable, "-c", _COLD],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            with dask.config.set({"coiled-jupyter.sandbox.state-dir": str(folder / "state")}):
                sandbox.stop()  # in case the child died before stopping its server
        if done.returncode != 0:
            raise SystemExit(f"the cold apply failed: {done.stderr.strip()[-500:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    median = {
        k: statistics.median(r[k] for r in runs) * 1000 for k in ("import", "first", "second")
    }
    return {
        **median,
        "min_first": min(r["first"] for r in runs) * 1000,
        "max_first": max(r["first"] for r in runs) * 1000,
        "said": runs[0]["said"],
        "n": len(runs),
    }


def default_path(reps: int, counter: Counter, ec2, n: int = 10) -> dict:
    """``session.apply(name, backend_options=...)``: settings, account layer (SSM), target, apply."""
    reset_and_warm(ec2, None)
    options = {"ingress": rule_set(n)}
    session.apply("warm-default", backend_options=options)
    fresh = [
        timed(counter, lambda: session.apply(f"default-{rep}", backend_options=options))[0]
        for rep in range(reps)
    ]
    same = [
        timed(counter, lambda: session.apply("default-0", backend_options=options))[0]
        for _ in range(reps)
    ]
    settings_only = [
        timed(counter, lambda: session.effective_settings(options))[0] for _ in range(reps)
    ]
    settings_local = [
        timed(counter, lambda: explicit_settings(options["ingress"]))[0] for _ in range(reps)
    ]
    target_only = [timed(counter, lambda: target("default-0"))[0] for _ in range(reps)]
    return {
        "n": n,
        "fresh": summary(fresh),
        "same": summary(same),
        "settings": summary(settings_only),
        "settings_local": summary(settings_local),
        "target": summary(target_only),
    }


# --------------------------------------------------------------------------------------------------
# Output


def ms(value: float) -> str:
    return f"{value:.1f}"


def measured_row(scenario: str, tool: str, rules, s: dict) -> list:
    """One row of the apply table from one scenario's summary."""
    span = f"{ms(s['min_ms'])}-{ms(s['max_ms'])}"
    return [
        scenario,
        tool,
        rules,
        ms(s["ms"]),
        span,
        ms(s["api_ms"]),
        s["calls"],
        s["sends"],
        s["ops"],
    ]


def report_more(other: dict, cold: dict, reps: int) -> None:
    rows = [
        measured_row(
            f"description changed on {other['n']}", "coiled_jupyter", other["n"], other["words"]
        ),
        measured_row(
            f"{other['swap']} replaced by {other['swap']} (over the quota)",
            "coiled_jupyter",
            other["swap"],
            other["swaps"],
        ),
    ]
    print(f"\nOther paths (median of {reps})\n")
    print(table(LATENCY_COLUMNS, rows))
    print(
        f"\nCold first apply (fresh process, no sandbox running; median of {cold['n']}): "
        f"import coiled_jupyter.session {ms(cold['import'])} ms; first session.apply "
        f"{ms(cold['first'])} ms (min-max {ms(cold['min_first'])}-{ms(cold['max_first'])}; "
        "sandbox start, moto backend load, settings, create); second apply in that process "
        f"{ms(cold['second'])} ms"
    )
    if cold["said"]:
        print(f"  progress said: {' / '.join(cold['said'])}")


def report(
    results: dict, default: dict, dcp_note: str | None, dcp_version: str | None, reps: int
) -> None:
    dcp_name = f"dask-cloudprovider {dcp_version}" if dcp_version else "dask-cloudprovider"
    rows = []
    for n, r in results.items():
        for key, scenario in (
            ("fresh", "fresh apply"),
            ("same", "no-change apply"),
            ("changed", "one rule changed"),
        ):
            rows.append(measured_row(scenario, "coiled_jupyter", n, r[key]))
    dcp_all = [r["dcp"] for r in results.values() if r["dcp"]]
    if dcp_all:
        for n, r in results.items():
            rows.append(
                measured_row(f"default group (beside n={n})", dcp_name, "fixed (3)", r["dcp"])
            )
        rows.append(
            [
                "no-change / update",
                dcp_name,
                NA,
                NA,
                NA,
                NA,
                NA,
                NA,
                "never reconciles an existing group",
            ]
        )
    else:
        rows.append(["default group", dcp_name, NA, NA, NA, NA, NA, NA, dcp_note or "not run"])
    print(f"\nApply latency and cloud calls (median of {reps}; ms from the caller's side)\n")
    print(table(LATENCY_COLUMNS, rows))
    print(
        "\n'in API calls ms': time inside botocore calls (serialise, sign, HTTP to moto, parse); "
        "the rest of 'median ms' is work on this side (rules, plan, table, lock, target)."
    )
    print(
        "coiled_jupyter's desired_rules() (compact + quota check; once per apply): "
        + ", ".join(f"{n} rules {ms(r['desired_rules']['ms'])} ms" for n, r in results.items())
    )

    if dcp_all:
        ratio_rows = []
        for n, r in results.items():
            mine, theirs = r["fresh"], r["dcp"]
            ratio_rows.append(
                [
                    n,
                    ms(mine["ms"]),
                    ms(theirs["ms"]),
                    f"{mine['ms'] / theirs['ms']:.2f}x",
                    f"{mine['calls_n']:g}",
                    f"{theirs['calls_n']:g}",
                    f"{mine['calls_n'] / theirs['calls_n']:.2f}x",
                ]
            )
        print(
            "\nRatios: coiled_jupyter fresh apply / dask-cloudprovider default group creation "
            "(same round, same server)\n"
        )
        print(
            table(
                [
                    "rules",
                    "cj ms",
                    "dcp ms",
                    "latency ratio",
                    "cj calls",
                    "dcp calls",
                    "call ratio",
                ],
                ratio_rows,
            )
        )
    if dcp_note:
        print(f"\nNOTE: {dcp_note}")

    d = default["fresh"], default["same"]
    print(
        f"\nFull default path, {default['n']} rules (session.apply(name, backend_options=...): "
        "settings resolution with the account layer read from SSM, then apply):"
    )
    for label, s in zip(("fresh", "no change"), d):
        print(
            f"  {label:9}: median {ms(s['ms'])} ms, {s['calls']} API calls "
            f"({s['ops']}), {s['sends']} HTTP sends"
        )
    s = default["settings"]
    print(
        f"  of which effective_settings() with the SSM read: median {ms(s['ms'])} ms, "
        f"{s['calls']} API call ({s['ops']})"
    )
    s = default["settings_local"]
    print(f"  effective_settings(account=lambda: None), no SSM: median {ms(s['ms'])} ms")
    s = default["target"]
    print(
        f"  target() (sandbox: reads its state file and GETs /moto-api/ once, not an EC2 "
        f"call; counted in every apply above): median {ms(s['ms'])} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="repetitions per case (default 7)")
    args = parser.parse_args(argv)

    import boto3
    import moto

    print("bench_apply: coiled_jupyter.provision.reconcile.apply on a local moto server (not AWS)")
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs ({platform.machine()}), "
        f"boto3 {boto3.__version__}, moto {moto.__version__}"
    )
    if _IGNORED_ENV:
        print(f"ignored for this run: {', '.join(_IGNORED_ENV)}")

    state = Path(_TMP.name) / "sandbox"
    with dask.config.set(
        {
            "coiled-jupyter.sandbox.state-dir": str(state),
            "coiled-jupyter.backend": "sandbox",
            "coiled-jupyter.public-ip.services": [],
            "coiled-jupyter.public-ip.services-ipv6": [],
        }
    ):
        if sandbox.running() is not None:  # cannot happen with a fresh folder; never reuse one
            raise SystemExit("a sandbox is already registered in the temporary folder")
        start = time.perf_counter()
        server = sandbox.ensure()
        print(
            f"moto server started at {server.url} (pid {server.pid}) in "
            f"{time.perf_counter() - start:.2f} s; state in {state}"
        )
        provider = None
        try:
            t = target()
            ec2 = aws.client("ec2", t.connection())
            counter = Counter()
            counter.attach(ec2, "ec2")
            counter.attach(aws.client("ssm", t.connection()), "ssm")
            start = time.perf_counter()
            urllib.request.urlopen(
                urllib.request.Request(f"{server.url}/moto-api/reset", method="POST"), timeout=10
            ).close()
            ec2.describe_security_groups(MaxResults=5)
            print(
                f"first EC2 call on the fresh server (moto backend load): "
                f"{time.perf_counter() - start:.2f} s (excluded)"
            )

            provider, dcp_note = start_cloudprovider(server.url)
            if provider is not None and provider.workaround:
                dcp_note = (
                    f"dask-cloudprovider {provider.version}: get_security_group() fails as "
                    f"released ({provider.workaround}; dask/dask-cloudprovider#481), so "
                    "EC2Cluster cannot create dask-default by itself. Timed instead: its "
                    "same DescribeSecurityGroups(GroupNames=['dask-default']) lookup, then "
                    "create_default_security_group(client, 'dask-default', vpc, tags)."
                )
            if dcp_note:
                print(f"NOTE: {dcp_note}")

            results = {}
            for n in RULE_COUNTS:
                print(f"round: {n} rule(s) x {args.reps} repetitions ...", flush=True)
                results[n] = round_for(n, args.reps, counter, ec2, provider)
            print("round: full default path ...", flush=True)
            default = default_path(args.reps, counter, ec2)
            print("round: description change, replacement over the quota ...", flush=True)
            other = other_paths(args.reps, counter, ec2)
            report(results, default, dcp_note, provider.version if provider else None, args.reps)
        finally:
            if provider is not None:
                provider.close()
            stopped = sandbox.stop()
            print(f"\nmoto server {'stopped' if stopped else 'was not running at the end'}")
    cold_reps = max(1, min(args.reps, 3))
    print(f"round: cold first apply x {cold_reps} fresh processes ...", flush=True)
    report_more(other, cold_first_apply(cold_reps), args.reps)
    _TMP.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
