"""The shared provisioning core: plan, apply, describe and destroy one cluster's security group.

Every front end (magics, widget panel, REST handlers) calls these functions and gets the same result
objects back; nothing here prints. The cloud is reached only through :mod:`.aws` (the sandbox is the same
code pointed at a local endpoint), and nothing here imports IPython, ipywidgets or Jupyter Server.

An apply converges idempotently: it reads the group once, adds what is missing before removing what is
not declared (so access never drops below the declared rules mid-way), and reads back to verify. A run
cut off half-way is finished by the next run; two kernels on one machine are serialised by a file lock,
and a change by another machine during an apply is detected by the read-back and converged again.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..rules import IngressError, Rule, compact, open_to_everyone, resolve_me, sort_key
from ..settings import Layer, LayerValues, Settings, effective_settings, layer_from_options, option

BACKENDS = ("sandbox", "aws")
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8}([0-9a-f]{9})?$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_CONVERGE_ROUNDS = 3


class QuotaError(IngressError):
    """The declared rules would not fit the group's quota; refused before any call."""


# --------------------------------------------------------------------------------------------------
# Which cluster, where


@dataclass(frozen=True)
class Target:
    """One cluster's group: backend, region, VPC and cluster name; every table names all of them."""

    backend: str
    region: str
    cluster: str
    vpc_id: str | None = None
    endpoint_url: str | None = field(default=None, compare=False)

    def connection(self):
        from .aws import Connection

        if self.backend == "sandbox":
            from .sandbox import DUMMY_KEY

            return Connection(
                region=self.region,
                endpoint_url=self.endpoint_url,
                access_key_id=DUMMY_KEY,
                secret_access_key=DUMMY_KEY,
                direct=True,
            )
        return Connection(region=self.region)

    @property
    def backend_label(self) -> str:
        if self.backend == "sandbox":
            return f"sandbox (local moto server at {self.endpoint_url}, not AWS)"
        return "aws"


def validate_target(cluster=None, *, backend=None, region=None, vpc_id=None) -> tuple:
    """Check every value a person can type for a target, before anything starts or is called."""
    backend = backend if backend is not None else option("backend")
    problems = []
    if backend not in BACKENDS:
        problems.append(
            f"backend {backend!r} is not known; use 'sandbox' (local, no account) or 'aws'."
        )
    cluster = cluster if cluster is not None else option("cluster")
    if isinstance(cluster, str) and not cluster.strip():
        problems.append(
            "cluster name is empty; give the cluster's name (an empty name never means the "
            "default cluster)."
        )
    elif not isinstance(cluster, str) or not _CLUSTER_NAME.fullmatch(cluster):
        problems.append(
            f"cluster name {cluster!r} is not valid; use up to 63 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit."
        )
    vpc_id = vpc_id if vpc_id is not None else option("vpc-id")
    if vpc_id is not None and (not isinstance(vpc_id, str) or not _VPC_ID.match(vpc_id)):
        problems.append(f"VPC id {vpc_id!r} is not valid; it looks like 'vpc-0123456789abcdef0'.")
    region = region if region is not None else option("region")
    if region is not None and (not isinstance(region, str) or not _REGION.match(region)):
        problems.append(f"region {region!r} is not valid; it looks like 'us-east-1'.")
    if problems:
        raise IngressError(problems)
    return backend, cluster, vpc_id, region


def target(cluster=None, *, backend=None, region=None, vpc_id=None) -> Target:
    """Resolve a cluster name (and optional overrides) into a :class:`Target`."""
    backend, cluster, vpc_id, region = validate_target(
        cluster, backend=backend, region=region, vpc_id=vpc_id
    )
    if backend == "sandbox":
        from .sandbox import REGION, endpoint

        return Target("sandbox", region or REGION, cluster, vpc_id, endpoint())
    if region is None:
        import boto3

        region = boto3.session.Session().region_name
        if region is None:
            raise IngressError(
                [
                    "no AWS region is set; set coiled-jupyter.region in Dask's config "
                    "or AWS_DEFAULT_REGION."
                ]
            )
    return Target("aws", region, cluster, vpc_id)


# --------------------------------------------------------------------------------------------------
# Result objects (rendered by ..display)


class _Displayed:
    """Rich display for every result: text/plain, text/html and the rules JSON mimetype."""

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ..display import mimebundle

        return mimebundle(self)

    def __repr__(self) -> str:
        from ..display import text

        return text(self)


@dataclass(frozen=True, repr=False)
class RuleTable(_Displayed):
    """The group's inbound rules as the cloud reports them, each with where it came from."""

    target: Target
    account: str
    group_id: str | None
    group_name: str | None
    vpc_id: str | None
    rules: tuple[Rule, ...]
    origins: tuple[str, ...]
    unmanageable: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def exists(self) -> bool:
        return self.group_id is not None


@dataclass(frozen=True, repr=False)
class Plan(_Displayed):
    """What an apply would do: create the group, add, remove and keep rules."""

    target: Target
    account: str
    group_id: str | None
    add: tuple[Rule, ...]
    remove: tuple[Rule, ...]
    keep: tuple[Rule, ...]
    provenance: str
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def create(self) -> bool:
        return self.group_id is None

    @property
    def changes(self) -> bool:
        return self.create or bool(self.add or self.remove)


@dataclass(frozen=True, repr=False)
class ApplyResult(_Displayed):
    """The plan that was carried out and the group's rules read back afterwards."""

    plan: Plan
    table: RuleTable

    @property
    def changed(self) -> bool:
        return self.plan.changes


@dataclass(frozen=True, repr=False)
class DestroyResult(_Displayed):
    target: Target
    group_id: str | None
    deleted: bool
    account: str = ""


@dataclass(frozen=True, repr=False)
class SchedulerAddress(_Displayed):
    """The address a client should connect to, by ``use_scheduler_public_ip``."""

    target: Target
    instance_id: str
    ip: str
    public: bool
    port: int
    account: str = ""

    @property
    def address(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"tls://{host}:{self.port}"

    def __str__(self) -> str:
        return self.address


@dataclass(frozen=True, repr=False)
class SettingsView(_Displayed):
    """The effective settings with provenance, and whether this notebook can reach the cluster."""

    target: Target
    settings: Settings
    reachability: object = None


@dataclass(frozen=True, repr=False)
class SaveResult(_Displayed):
    """Where the effective settings were kept: the Dask config file, or the account store."""

    target: Target
    scope: str
    where: str
    settings: Settings


class ClusterKwargs(dict):
    """Keyword arguments for ``coiled.Cluster`` (``backend_options``, ``use_scheduler_public_ip``),
    with the group id for other launchers, e.g. dask-cloudprovider's ``security_groups=``."""

    def __init__(self, kwargs: dict, security_group_id: str | None):
        super().__init__(kwargs)
        self.security_group_id = security_group_id

    @property
    def security_groups(self) -> list[str]:
        return [self.security_group_id] if self.security_group_id else []


# --------------------------------------------------------------------------------------------------
# Desired rules


def self_rule(group_id: str) -> Rule:
    from ..rules import ALL_PROTOCOLS
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


def make_plan(t: Target, group, desired: list[Rule], provenance: str) -> Plan:
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
            provenance,
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
        group.account,
        group.group_id,
        tuple(sorted(add, key=sort_key)),
        tuple(sorted(remove, key=sort_key)),
        tuple(sorted(keep, key=sort_key)),
        provenance,
        tuple(notes),
        _warnings(desired),
    )


def plan(cluster=None, *, backend_options=None, settings: Settings | None = None, **where) -> Plan:
    """What :func:`apply` would change for this cluster (one read, no change)."""
    settings = settings or effective_settings(backend_options)
    desired = desired_rules(settings)
    t = target(cluster, **where)
    groups = _groups(t)
    group = groups.find(t.cluster, t.vpc_id)
    if group is None:
        # apply would be refused at CreateSecurityGroup; the plan must say so first.
        groups.refuse_foreign_name(t.cluster, t.vpc_id)
    return make_plan(t, group, desired, settings.ingress.provenance)


def apply(
    cluster=None, *, backend_options=None, settings: Settings | None = None, **where
) -> ApplyResult:
    """Create or reconcile the cluster's group to the effective settings, and read it back.

    Calls: a fresh cluster takes 4 (find, create, authorize, read back), no change takes 1 (find), a
    change takes at most 4 (find, authorize, revoke, read back), whatever the number of rules.
    """
    settings = settings or effective_settings(backend_options)
    desired = desired_rules(settings)
    t = target(cluster, **where)
    groups = _groups(t)
    with _apply_lock(t):
        group = groups.find(t.cluster, t.vpc_id)
        first = make_plan(t, group, desired, settings.ingress.provenance)
        if group is None:
            group_id = groups.create(t.cluster, t.vpc_id)
            groups.authorize(group_id, [*desired, self_rule(group_id)])
            group = groups.get(group_id)
        elif not first.changes:
            return ApplyResult(first, _table(t, group, settings, desired))
        rounds = 0
        while (step := make_plan(t, group, desired, settings.ingress.provenance)).changes:
            if rounds == _CONVERGE_ROUNDS:
                from .aws import CloudError

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


def describe(
    cluster=None, *, backend_options=None, settings: Settings | None = None, **where
) -> RuleTable:
    """The group's rules as the cloud reports them (one read)."""
    t = target(cluster, **where)
    group = _groups(t).find(t.cluster, t.vpc_id)
    settings = settings or effective_settings(backend_options)
    return _table(t, group, settings)


def destroy(cluster=None, **where) -> DestroyResult:
    """Delete the cluster's group, if it exists and is owned by coiled_jupyter."""
    t = target(cluster, **where)
    groups = _groups(t)
    with _apply_lock(t):
        group = groups.find(t.cluster, t.vpc_id)
        if group is None:
            return DestroyResult(t, None, False)
        return DestroyResult(t, group.group_id, groups.delete(group.group_id), group.account)


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
            origins.append(settings.ingress.provenance)
        else:
            origins.append("not declared")
    return RuleTable(
        t,
        group.account,
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


@contextlib.contextmanager
def _apply_lock(t: Target):
    """Serialise applies to one cluster from every kernel on this machine."""
    from .sandbox import state_dir

    folder = Path(state_dir()) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{t.backend}-{t.region}-{t.vpc_id}-{t.cluster}")
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def show_settings(
    cluster=None,
    *,
    backend_options=None,
    settings: Settings | None = None,
    reach: bool = True,
    **where,
) -> SettingsView:
    """The effective settings for a cluster, with this notebook's reachability verdict."""
    settings = settings or effective_settings(backend_options)
    t = target(cluster, **where)
    reachability = None
    if reach:
        from ..reach import check

        reachability = check(settings.rules, settings.use_scheduler_public_ip.value)
    return SettingsView(t, settings, reachability)


# --------------------------------------------------------------------------------------------------
# Scheduler address and cluster kwargs


def scheduler_address(
    cluster=None, *, backend_options=None, settings: Settings | None = None, **where
) -> SchedulerAddress:
    """The scheduler's public or private IP, as ``use_scheduler_public_ip`` says."""
    settings = settings or effective_settings(backend_options)
    t = target(cluster, **where)
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
        t, scheduler["InstanceId"], ip, public, int(option("scheduler-port")), group.account
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


def cluster_kwargs(
    cluster=None, *, backend_options=None, settings: Settings | None = None, **where
) -> ClusterKwargs:
    """What to hand to ``coiled.Cluster(**kwargs)``, and ``.security_group_id`` for other launchers."""
    from ..rules import to_coiled

    settings = settings or effective_settings(backend_options)
    desired = desired_rules(settings)
    t = target(cluster, **where)
    group = _groups(t).find(t.cluster, t.vpc_id)
    options = dict(backend_options or {})
    options.pop("firewall", None)
    options["ingress"] = to_coiled(desired)
    return ClusterKwargs(
        {
            "backend_options": options,
            "use_scheduler_public_ip": settings.use_scheduler_public_ip.value,
        },
        group.group_id if group else None,
    )


# --------------------------------------------------------------------------------------------------
# Keeping settings

SCOPES = ("user", "account")


def save(
    scope: str = "user", *, backend_options=None, settings: Settings | None = None, **where
) -> SaveResult:
    """Keep the effective settings: ``user`` in Dask's config file (new kernels and
    ``coiled.Cluster()`` read it), ``account`` as account-wide defaults for the whole team."""
    from ..settings import save_config

    word = scope.strip().lower() if isinstance(scope, str) else scope
    if word not in SCOPES:
        import difflib

        close = difflib.get_close_matches(str(word), SCOPES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise IngressError(
            [
                f"scope {scope!r} is not known; {hint}use 'user' (your Dask config "
                "file) or 'account' (account-wide defaults for the team)."
            ]
        )
    settings = settings or effective_settings(backend_options)
    t = target(**where)
    public_ip = settings.use_scheduler_public_ip.value
    if word == "user":
        return SaveResult(t, word, str(save_config(settings.rules, public_ip)), settings)
    from ..rules import to_coiled

    set_backend_options(ingress=to_coiled(settings.rules), use_scheduler_public_ip=public_ip)
    return SaveResult(t, word, f"SSM {_account_store(t).name}", settings)


# --------------------------------------------------------------------------------------------------
# Account-wide defaults


def _account_store(t: Target, account: str | None = None, connection=None):
    import dask.config

    from .aws import AccountStore

    name = option("account-parameter")
    workspace = (
        account
        or dask.config.get("coiled.workspace", None)
        or dask.config.get("coiled.account", None)
    )
    if workspace:
        name = f"{name}/{workspace}"
    return AccountStore(connection or t.connection(), name)


def load_account_layer() -> LayerValues:
    """The account layer from the configured backend's store (one SSM read)."""
    from ..settings import AccountStoreUnreadable
    from .aws import CloudError

    t = target()
    store = _account_store(t)
    try:
        options = store.load()
    except CloudError as error:
        raise AccountStoreUnreadable(
            f"{str(error).rstrip('.')}; the account defaults are needed because no Dask config, "
            "session or cluster options set these values."
        ) from None
    return layer_from_options(Layer.ACCOUNT, options, f"SSM {store.name}")


def set_backend_options(
    account: str | None = None,
    workspace: str | None = None,
    backend: str = "aws",
    ingress=None,
    firewall=None,
    aws_region: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    use_scheduler_public_ip: bool | None = None,
    **unsupported,
) -> None:
    """Set account-wide defaults, with Coiled's signature, in the account store (SSM).

    Everyone in the account then gets these rules unless their Dask config, session or cluster options
    say otherwise. Credentials given here are used for this one call's boto3 session only; they are not
    stored, printed or put into any message.
    """
    from .aws import Secret

    # At once, so that a traceback's argument list (%xmode Verbose) shows them masked.
    aws_access_key_id = Secret.wrap(aws_access_key_id)
    aws_secret_access_key = Secret.wrap(aws_secret_access_key)
    problems = []
    if unsupported:
        problems.append(
            f"set_backend_options here stores only firewall settings; "
            f"{', '.join(sorted(unsupported))} belong to Coiled's own "
            "coiled.set_backend_options."
        )
    if backend != "aws":
        problems.append(
            f"backend {backend!r} is not supported; coiled_jupyter manages AWS security "
            "groups (backend='aws')."
        )
    if problems:
        raise IngressError(problems)
    options = {}
    if ingress is not None or firewall is not None:
        values = layer_from_options(Layer.ACCOUNT, {"ingress": ingress, "firewall": firewall})
        options["ingress"] = [r.to_dict() for r in values.ingress]
    if use_scheduler_public_ip is not None:
        options["use_scheduler_public_ip"] = layer_from_options(
            Layer.ACCOUNT, {"use_scheduler_public_ip": use_scheduler_public_ip}
        ).use_scheduler_public_ip
    t = target(region=aws_region)
    connection = t.connection()
    if aws_access_key_id or aws_secret_access_key:
        if t.backend == "sandbox":
            raise IngressError(
                [
                    "real AWS keys are never sent to the sandbox; drop "
                    "aws_access_key_id/aws_secret_access_key or set "
                    "coiled-jupyter.backend to 'aws'."
                ]
            )
        from .aws import Connection

        connection = Connection(
            region=t.region,
            access_key_id=aws_access_key_id,
            secret_access_key=aws_secret_access_key,
        )
    store = _account_store(t, account or workspace, connection)
    current = store.load() or {}
    store.store({**current, **options})
