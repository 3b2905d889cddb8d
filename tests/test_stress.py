"""Stress, bounded in time and count, loopback only: several processes applying to one cluster at once,
and faults injected at botocore's ``before-send`` during a replacement across the quota.

The processes are ``python -c`` children with this test session's environment (its Dask config folder
and sandbox state directory, set by conftest.py), so they share the session's sandbox server. They
start together on a file signal, after a first read has warmed their clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from coiled_jupyter.errors import CloudError
from coiled_jupyter.provision import reconcile
from coiled_jupyter.provision.target import target
from coiled_jupyter.settings import effective_settings

PROCESS_TIMEOUT = 180  # seconds for all children, start-up included (8 imports on 2 cores: ~45 s)

_WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from coiled_jupyter import session

    name, cluster, rules, folder, rounds = sys.argv[1:6]
    rules, folder = json.loads(rules), Path(folder)
    session.describe(cluster)  # warm: find the sandbox, make the clients
    for n in range(int(rounds)):
        (folder / f"ready-{n}-{name}").touch()
        while not (folder / f"go-{n}").exists():
            time.sleep(0.002)
        start = time.perf_counter()
        result = session.apply(cluster, backend_options={"ingress": rules})
        seconds = time.perf_counter() - start
        # Written aside, then renamed: the parent must never read a half-written file.
        temp = folder / f"writing-{n}-{name}"
        temp.write_text(json.dumps([result.changed, seconds]))
        temp.rename(folder / f"done-{n}-{name}")
""")


def networks(count: int, start: int = 0) -> list[dict]:
    return [{"ports": [8786], "cidr": f"10.{2 * k}.0.0/16"} for k in range(start, start + count)]


def held(ec2, cluster: str) -> tuple[str, set[tuple]]:
    """The cluster's one group: its id and every inbound entry (the self rule checked and left out)."""
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": [cluster]}]
    )["SecurityGroups"]
    assert len(groups) == 1, groups
    group = groups[0]
    out = set()
    for p in group["IpPermissions"]:
        key = (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"))
        out.update((*key, r["CidrIp"]) for r in p.get("IpRanges", []))
        out.update((*key, r["GroupId"]) for r in p.get("UserIdGroupPairs", []))
    self_entry = ("-1", None, None, group["GroupId"])
    assert self_entry in out
    return group["GroupId"], out - {self_entry}


def expected(rules: list[dict]) -> set[tuple]:
    return {("tcp", r["ports"][0], r["ports"][-1], r["cidr"]) for r in rules}


class Workers:
    """Child processes applying rule sets to one cluster, released together round by round."""

    def __init__(self, folder: Path, cluster: str, sets: dict[str, list[dict]], rounds: int):
        self.folder, self.sets, self.rounds = folder, sets, rounds
        env = {**os.environ, "PYTHONPATH": str(Path(reconcile.__file__).parents[2])}
        self.procs = {
            name: subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WORKER,
                    name,
                    cluster,
                    json.dumps(rules),
                    str(folder),
                    str(rounds),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, rules in sets.items()
        }
        self.started = time.monotonic()

    def _wait_for(self, prefix: str) -> None:
        paths = [self.folder / f"{prefix}-{name}" for name in self.sets]
        while not all(p.exists() for p in paths):
            for name, proc in self.procs.items():
                if proc.poll() not in (None, 0):
                    raise AssertionError(f"worker {name} failed: {proc.communicate()[1]}")
            if time.monotonic() - self.started > PROCESS_TIMEOUT:
                raise AssertionError(f"workers never wrote {[p.name for p in paths]}")
            time.sleep(0.005)

    def round(self, n: int) -> dict[str, list]:
        """Release round ``n`` once every worker is ready; each worker's [changed, seconds]."""
        self._wait_for(f"ready-{n}")
        (self.folder / f"go-{n}").touch()
        self._wait_for(f"done-{n}")
        return {
            name: json.loads((self.folder / f"done-{n}-{name}").read_text()) for name in self.sets
        }

    def finish(self) -> None:
        for name, proc in self.procs.items():
            _out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
            assert proc.returncode == 0, (name, err)

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(sandbox, tmp_path):
    made: list[Workers] = []

    def make(cluster: str, sets: dict[str, list[dict]], rounds: int = 1) -> Workers:
        made.append(Workers(tmp_path, cluster, sets, rounds))
        return made[-1]

    yield make
    for group in made:
        group.kill()


def test_eight_processes_applying_the_same_settings_at_once(cloud, workers):
    rules = networks(12)
    crowd = workers("crowd", {f"w{k}": rules for k in range(8)})
    outcome = crowd.round(0)
    crowd.finish()

    _gid, entries = held(cloud.ec2, "crowd")
    assert entries == expected(rules)
    changed = [name for name, (did, _s) in outcome.items() if did]
    assert len(changed) == 1, outcome  # the first created the group; the others found no change
    slowest = max(seconds for _did, seconds in outcome.values())
    print(f"\n8 processes, same settings: slowest apply {slowest * 1000:.0f} ms, {outcome}")
    assert not reconcile.apply(
        target("crowd"), effective_settings({"ingress": rules}, account=lambda: None)
    ).changed


def test_two_processes_applying_different_settings_end_in_one_of_them(cloud, workers):
    # 30 + 30 + the self rule cross the quota: each switch goes in steps.
    sets = {"a": networks(30), "b": networks(30, start=30)}
    rounds = 4
    pair = workers("tug", sets, rounds)
    seen = []
    for n in range(rounds):
        outcome = pair.round(n)
        _gid, entries = held(cloud.ec2, "tug")
        assert entries in (expected(sets["a"]), expected(sets["b"])), sorted(entries)[:5]
        seen.append(("a" if entries == expected(sets["a"]) else "b", outcome))
    pair.finish()
    print(f"\n2 processes, different settings, {rounds} rounds: {seen}")


@pytest.mark.parametrize("failing", ["first authorize", "revoke", "last authorize"])
def test_a_fault_during_a_replacement_across_the_quota_is_finished_by_the_next_run(
    cloud, faults, failing
):
    old, new = networks(40), networks(40, start=40)
    settings_old = effective_settings({"ingress": old}, account=lambda: None)
    settings_new = effective_settings({"ingress": new}, account=lambda: None)
    reconcile.apply(target("cut-swap"), settings_old)
    operation, skip = {
        "first authorize": ("AuthorizeSecurityGroupIngress", 0),
        "revoke": ("RevokeSecurityGroupIngress", 0),
        "last authorize": ("AuthorizeSecurityGroupIngress", 1),
    }[failing]
    faults.fail(operation, "UnauthorizedOperation", status=403, skip=skip)

    with pytest.raises(CloudError) as info:
        reconcile.apply(target("cut-swap"), settings_new)
    assert info.value.code == "UnauthorizedOperation"
    _gid, cut = held(cloud.ec2, "cut-swap")
    assert len(cut) + 1 <= 60  # never over the quota, whatever step failed
    # The sentence says what the failure left: above all when that is wider than either setting.
    left = {
        "first authorize": "was left as it was",
        "revoke": "wider than either",
        "last authorize": f"holding {len(cut)} of the 40 declared rules",
    }[failing]
    assert left in str(info.value), str(info.value)
    wider = not cut <= expected(old) and not cut <= expected(new)
    assert wider == (failing == "revoke")

    finished = reconcile.apply(target("cut-swap"), settings_new)
    assert finished.changed
    _gid, entries = held(cloud.ec2, "cut-swap")
    assert entries == expected(new)
    assert not reconcile.apply(target("cut-swap"), settings_new).changed


def test_throttling_during_a_replacement_across_the_quota_is_retried_within_the_run(cloud, faults):
    old, new = networks(40), networks(40, start=40)
    reconcile.apply(target("slow-swap"), effective_settings({"ingress": old}, account=lambda: None))
    faults.sent.clear()
    for operation in ("AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress"):
        faults.fail(operation, "RequestLimitExceeded", status=503, times=1)

    result = reconcile.apply(
        target("slow-swap"), effective_settings({"ingress": new}, account=lambda: None)
    )

    assert result.changed
    assert (
        faults.sent["AuthorizeSecurityGroupIngress"] == 3
    )  # one throttled, retried; then the rest
    assert faults.sent["RevokeSecurityGroupIngress"] == 2
    _gid, entries = held(cloud.ec2, "slow-swap")
    assert entries == expected(new)


# Two writers with no lock in common: each process has a state folder of its own (a copy of the
# session's sandbox record, so both reach the one server), as two machines would. Both have read
# the group before either writes: a before-send hook holds each one's first authorize until the
# other is there too.
_UNLOCKED_WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from coiled_jupyter import session
    from coiled_jupyter.errors import CloudError
    from coiled_jupyter.provision import aws
    from coiled_jupyter.provision.target import target

    name, other, cluster, rules, folder = sys.argv[1:6]
    folder = Path(folder)

    def together(**_):
        (folder / f"writing-{name}").touch()
        deadline = time.monotonic() + 120
        while not (folder / f"writing-{other}").exists():
            if time.monotonic() > deadline:
                raise SystemExit("the other writer never came")
            time.sleep(0.002)

    ec2 = aws.client("ec2", target().connection())
    ec2.meta.events.register("before-send.ec2.AuthorizeSecurityGroupIngress", together)
    try:
        result = session.apply(cluster, backend_options={"ingress": json.loads(rules)})
        said = {"ok": True, "table": sorted(r.source for r in result.table.rules)}
    except CloudError as error:
        said = {"ok": False, "code": error.code, "message": str(error)}
    (folder / f"said-{name}.tmp").write_text(json.dumps(said))
    (folder / f"said-{name}.tmp").rename(folder / f"said-{name}")
""")


def test_two_writers_without_a_shared_lock_never_both_report_success(cloud, tmp_path):
    from coiled_jupyter.provision import sandbox

    base = effective_settings({"ingress": networks(1)}, account=lambda: None)
    group_id = reconcile.apply(target("unlocked"), base).table.group_id
    sets = {"a": [{"ports": [8786], "cidr": "10.50.0.0/16"}], "b": networks(1, start=30)}
    env = {**os.environ, "PYTHONPATH": str(Path(reconcile.__file__).parents[2])}
    procs = {}
    for name, rules in sets.items():
        state = tmp_path / f"state-{name}"
        state.mkdir()
        (state / sandbox.STATE_FILE).write_text(sandbox._state_file().read_text())
        other = "b" if name == "a" else "a"
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", _UNLOCKED_WRITER, name, other, "unlocked", json.dumps(rules)]
            + [str(tmp_path)],
            env={**env, "DASK_COILED_JUPYTER__SANDBOX__STATE_DIR": str(state)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        for name, proc in procs.items():
            _out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
            assert proc.returncode == 0, (name, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    said = {name: json.loads((tmp_path / f"said-{name}").read_text()) for name in sets}
    _gid, entries = held(cloud.ec2, "unlocked")
    print(f"\ntwo writers, no shared lock: {said}; the group holds {sorted(entries)}")

    assert entries == expected(sets["a"]) | expected(sets["b"])  # the old rule went, both added
    assert not all(s["ok"] for s in said.values())  # the group holds neither's settings
    for name, s in said.items():
        other = sets["b" if name == "a" else "a"][0]["cidr"]
        if s["ok"]:  # finished before the other wrote: its read found its own settings
            assert s["table"] == sorted([sets[name][0]["cidr"], group_id])
        else:
            assert s["code"] == "ConcurrentChange", s
            assert "another writer changed group" in s["message"]
            assert other in s["message"] and "admits more" in s["message"]
