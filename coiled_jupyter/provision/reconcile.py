"""Plan, apply, describe and destroy one cluster's security group: the reconcile loop.

It knows no cloud API: every call goes through :mod:`.aws` (the sandbox is the same code pointed at a
local endpoint). It takes resolved :class:`~coiled_jupyter.settings.Settings` and a
:class:`~.target.Target`, and returns result objects; nothing here prints, and nothing here imports
IPython, ipywidgets or Jupyter Server.

An apply converges idempotently: it reads the group once, adds what is missing before removing what is
not declared (so access never drops below the declared rules mid-way), and reads back to verify. A run
cut off half-way is finished by the next run; two kernels on one machine are serialised by a file lock,
and a change by another machine during an apply is detected by the read-back and converged again.
"""

from __future__ import annotations

from ..errors import CloudError
from ..rules import (
    ALL_PROTOCOLS,
    IngressError,
    Rule,
    compact,
    open_to_everyone,
    resolve_me,
    sort_key,
)
from ..settings import Settings, option
from ..state import file_lock, lock_name
from .results import ApplyResult, ClusterKwargs, DestroyResult, Plan, RuleTable, SchedulerAddress
from .target import Target

_CONVERGE_ROUNDS = 3


class QuotaError(IngressError):
    """The declared rules would not fit the group's quota; refused before any call."""


# --------------------------------------------------------------------------------------------------
# Desired rules


def self_rule(group_id: str) -> Rule:
    from .aws import SELF_DESCRIPTION

    return Rule(ALL_PROTOCOLS, 0, 65535, group_id, SELF_DESCRIPTION)


def desired_rules(settings: Settings) -> list[Rule]:
    """The declared rules as they will be sent: ``me`` resolved, compacted, checked against quotas."""
    rules = list(settings.rules)
    if any(r.source == "me" for r in rules):
        from ..reach import public_address

        address = public_address()
        if address is None:
            raise IngressError(
                [
                    "the rules use 'me', but this notebook's public address is unknown "
                    "(offline?); set coiled.client_public_ip in Dask's config, or write "
                    "the address instead of 'me'."
                ]
            )
        rules = resolve_me(rules, [address])
    rules = compact(rules)
    check_quota(rules)
    return rules


def check_quota(rules: list[Rule]) -> None:
    """AWS counts inbound rules per group separately for IPv4 and IPv6; the self rule counts too."""
    limit = int(option("rules-per-group"))
    ipv4 = sum(1 for r in rules if r.source_kind in ("ipv4", "group")) + 1
    ipv6 = sum(1 for r in rules if r.source_kind == "ipv6")
    problems = [
        f"the rules need {count} {family} entries in one security group (counting the "
        f"cluster's own rule), over the quota of {limit}; merge networks or ports, or raise "
        "the quota with AWS and set coiled-jupyter.rules-per-group."
        for family, count in (("IPv4", ipv4), ("IPv6", ipv6))
        if count > limit
    ]
    if problems:
        raise QuotaError(problems)


def _warnings(rules) -> tuple[str, ...]:
    wide = open_to_everyone(rules)
    if not wide:
        return ()
    # Sorted by the numbers, not by parsing r.ports: a rule added by hand may be ICMP, whose "ports"
    # are a type and code, -1 for all ("-1" has no number before its "-").
    ports = ", ".join(
        dict.fromkeys(r.ports for r in sorted(wide, key=lambda r: (r.from_port, r.to_port)))
    )
    return (
        f"port {ports} is open to the whole internet; restrict it to your network "
        "(e.g. %coiled_ingress set with a CIDR, or 'me').",
    )


# --------------------------------------------------------------------------------------------------
# Operations


def _groups(t: Target):
    from .aws import SecurityGroups

    return SecurityGroups(t.connection())


def make_plan(t: Target, group, desired: list[Rule], origin: str) -> Plan:
    """Diff the desired rules (plus the group's self rule) against the group as read."""
    notes: list[str] = []
    if group is None:
        return Plan(
            t,
            "",
            None,
            tuple(desired),
            (),
            (),
            origin,
            (
                f"a new security group will be created for cluster {t.cluster!r}, owned by "
                "coiled_jupyter; it also admits all traffic from itself.",
            ),
            _warnings(desired),
        )
    wanted = {r.key: r for r in [*desired, self_rule(group.group_id)]}
    current = {r.key: r for r in group.rules}
    add = tuple(r for k, r in wanted.items() if k not in current)
    remove = tuple(r for k, r in current.items() if k not in wanted)
    keep = tuple(r for k, r in current.items() if k in wanted)
    if remove:
        notes.append(
            f"{len(remove)} rule(s) in the group are not declared in the settings (for "
            "example added by hand in the console); they will be removed because this group "
            "is owned by coiled_jupyter."
        )
    for item in group.unmanageable:
        notes.append(
            f"the group also holds {item}, which coiled_jupyter cannot manage; it is left as it is."
        )
    return Plan(
        t,
        group.account_id,
        group.group_id,
        tuple(sorted(add, key=sort_key)),
        tuple(sorted(remove, key=sort_key)),
        tuple(sorted(keep, key=sort_key)),
        origin,
        tuple(notes),
        _warnings(desired),
    )


def plan(t: Target, settings: Settings) -> Plan:
    """What :func:`apply` would change for this cluster (one read, no change)."""
    desired = desired_rules(settings)
    t = t.connected()
    groups = _groups(t)
    group = groups.find(t.cluster, t.vpc_id)
    if group is None:
        # apply would be refused at CreateSecurityGroup; the plan must say so first.
        groups.refuse_foreign_name(t.cluster, t.vpc_id)
    return make_plan(t, group, desired, settings.ingress.origin)


def apply(t: Target, settings: Settings, *, on_wait=None) -> ApplyResult:
    """Create or reconcile the cluster's group to the effective settings, and read it back.

    Calls: a fresh cluster takes 4 (find, create, authorize, read back), no change takes 1 (find), a
    change takes at most 4 (find, authorize, revoke, read back), whatever the number of rules.
    ``on_wait`` is told, with a sentence, when another kernel's apply to this cluster makes it wait.
    """
    desired = desired_rules(settings)
    t = t.connected()
    groups = _groups(t)
    with _apply_lock(t, on_wait):
        group = groups.find(t.cluster, t.vpc_id)
        first = make_plan(t, group, desired, settings.ingress.origin)
        if group is None:
            group_id = groups.create(t.cluster, t.vpc_id)
            groups.authorize(group_id, [*desired, self_rule(group_id)])
            group = groups.get(group_id)
        elif not first.changes:
            return ApplyResult(first, _table(t, group, settings, desired))
        rounds = 0
        while (step := make_plan(t, group, desired, settings.ingress.origin)).changes:
            if rounds == _CONVERGE_ROUNDS:
                raise CloudError(
                    "ConcurrentChange",
                    f"the group {group.group_id} kept changing "
                    "while it was applied (another writer?); run apply again.",
                )
            rounds += 1
            groups.authorize(group.group_id, list(step.add))
            groups.revoke(group.group_id, list(step.remove))
            group = groups.get(group.group_id)
    return ApplyResult(first, _table(t, group, settings, desired))


def describe(t: Target, settings: Settings) -> RuleTable:
    """The group's rules as the cloud reports them (one read), each with its origin."""
    t = t.connected()
    group = _groups(t).find(t.cluster, t.vpc_id)
    return _table(t, group, settings)


def destroy(t: Target, *, on_wait=None) -> DestroyResult:
    """Delete the cluster's group, if it exists and is owned by coiled_jupyter."""
    t = t.connected()
    groups = _groups(t)
    with _apply_lock(t, on_wait):
        group = groups.find(t.cluster, t.vpc_id)
        if group is None:
            return DestroyResult(t, None, False)
        return DestroyResult(t, group.group_id, groups.delete(group.group_id), group.account_id)


def _table(t: Target, group, settings: Settings, desired: list[Rule] | None = None) -> RuleTable:
    """The group as read, each rule with its origin; ``desired`` saves compacting the rules again."""
    if group is None:
        return RuleTable(
            t,
            "",
            None,
            None,
            None,
            (),
            (),
            warnings=(
                *_backend_warnings(t),
                f"cluster {t.cluster!r} has no security group yet; run apply.",
            ),
        )
    if desired is None:
        try:
            desired = desired_rules(settings)
        except IngressError:
            desired = []
    declared = {r.key for r in desired}
    origins = []
    for rule in group.rules:
        if rule.source == group.group_id:
            origins.append("this group (cluster-internal)")
        elif rule.key in declared:
            origins.append(settings.ingress.origin)
        else:
            origins.append("not declared")
    return RuleTable(
        t,
        group.account_id,
        group.group_id,
        group.name,
        group.vpc_id,
        group.rules,
        tuple(origins),
        group.unmanageable,
        (*_backend_warnings(t), *_warnings(group.rules)),
    )


def _backend_warnings(t: Target) -> tuple[str, ...]:
    """A sandbox restart, announced in every table until acknowledged (see sandbox.restart_warning)."""
    if t.backend != "sandbox":
        return ()
    from .sandbox import restart_warning

    warning = restart_warning()
    return (warning,) if warning else ()


def _apply_lock(t: Target, on_wait):
    """Serialise applies to one cluster from every kernel on this machine, waiting a bounded time."""
    return file_lock(
        lock_name(t.backend, t.region, t.vpc_id, t.cluster),
        timeout=float(option("lock-timeout")),
        what=f"another kernel's apply to cluster {t.cluster!r}",
        on_wait=on_wait,
    )


# --------------------------------------------------------------------------------------------------
# Scheduler address and cluster kwargs


def scheduler_address(t: Target, settings: Settings) -> SchedulerAddress:
    """The scheduler's public or private IP, as ``use_scheduler_public_ip`` says."""
    t = t.connected()
    groups = _groups(t)
    group = groups.find(t.cluster, t.vpc_id)
    if group is None:
        raise IngressError([f"cluster {t.cluster!r} has no security group yet; run apply first."])
    instances = groups.instances(group.group_id)
    scheduler = _pick_scheduler(instances, t.cluster)
    if scheduler is None:
        raise IngressError(
            [
                f"no running scheduler instance uses the group of cluster "
                f"{t.cluster!r}; start the cluster first."
            ]
        )
    public = settings.use_scheduler_public_ip.value
    ip = scheduler.get("PublicIpAddress") if public else scheduler.get("PrivateIpAddress")
    if not ip:
        raise IngressError(
            [
                f"use_scheduler_public_ip is true but scheduler {scheduler['InstanceId']}"
                " has no public IP; run %coiled_scheduler_ip private (and admit your "
                "VPC/VPN range), or start the cluster in a public subnet."
            ]
        )
    return SchedulerAddress(
        t, scheduler["InstanceId"], ip, public, int(option("scheduler-port")), group.account_id
    )


def _pick_scheduler(instances: list[dict], cluster: str):
    """The instance tagged as the scheduler (Coiled names it '<cluster>-scheduler'), or the only one."""

    def tags(i):
        return {t["Key"]: t["Value"] for t in i.get("Tags", [])}

    for instance in instances:
        found = tags(instance)
        if (
            found.get("Name", "").endswith("-scheduler")
            or found.get("coiled-jupyter:role") == "scheduler"
            or found.get("dask:role") == "scheduler"
        ):
            return instance
    return instances[0] if len(instances) == 1 else None


def cluster_kwargs(t: Target, settings: Settings, backend_options=None) -> ClusterKwargs:
    """What to hand to ``coiled.Cluster(**kwargs)``, and ``.security_group_id`` for other launchers.

    ``backend_options["ingress"]`` is exactly Coiled's ``FirewallOptions`` list (integer ports, a
    CIDR, no other key; see :func:`~coiled_jupyter.rules.to_coiled`), because ``coiled.Cluster``
    applies ingress only when it is passed this way: it never reads it from Dask's config. A group
    in the sandbox is a moto group that no real launcher can use, so it is kept apart, as
    ``.sandbox_group_id``, and ``.security_group_id`` stays None.
    """
    from ..rules import to_coiled

    desired = desired_rules(settings)
    ingress = to_coiled(desired, client=True)
    t = t.connected()
    group = _groups(t).find(t.cluster, t.vpc_id)
    options = dict(backend_options or {})
    options.pop("firewall", None)
    options["ingress"] = ingress
    kwargs = {
        "backend_options": options,
        "use_scheduler_public_ip": settings.use_scheduler_public_ip.value,
    }
    if group is None or t.backend != "sandbox":
        return ClusterKwargs(kwargs, group.group_id if group else None)
    return ClusterKwargs(
        kwargs,
        None,
        sandbox_group_id=group.group_id,
        notes=(
            f"the group {group.group_id} exists only in the sandbox (a local moto server), so no "
            "real launcher can use it and security_group_id is None; set coiled-jupyter.backend "
            "to aws and apply to get a real group.",
        ),
    )
