"""Plan, apply, describe and destroy one cluster's security group: the reconcile loop.

It knows no cloud API: every call goes through :mod:`.aws` (the sandbox is the same code pointed at a
local endpoint). It takes resolved :class:`~coiled_jupyter.settings.Settings` and a
:class:`~.target.Target`, and returns result objects; nothing here prints, and nothing here imports
IPython, ipywidgets or Jupyter Server.

An apply converges whatever the path, in as few calls as the cloud allows: it reads the group once,
then adds what is missing before removing what is not declared (so access never drops below the
declared rules mid-way), and gives changed descriptions in place. When the group cannot hold the old
and the new rules at once (the rules-per-group quota), it adds what fits, removes, then adds the rest,
and the plan says beforehand that access narrows for that moment. After its writes it reads the
group once: only a read knows what the group holds, since there is no lock across machines. A write
that conflicts with another writer (a duplicate or missing rule) is resolved by reading the group
again; a change that does not conflict shows in that last read and is said, with what differs,
never reported as success. A run cut off half-way says what it left and is finished by the next run;
two kernels on one machine are serialised by a file lock.

Rules this tool writes carry its owner tag (and 'me' rules the networks 'me' stood for), so a plan
tells rules added by hand from rules it wrote earlier that are no longer declared.
"""

from __future__ import annotations

import collections
import ipaddress
import time
from dataclasses import dataclass, replace

from ..errors import CloudError
from ..policy import Breach
from ..rules import (
    ALL_PROTOCOLS,
    MAX_RULES,
    IngressError,
    Rule,
    compaction,
    open_to_everyone,
    resolve_me,
    sort_key,
)
from ..settings import Settings, account_drift_note, option, replaced_rules_note
from ..state import file_lock, lock_name
from . import history
from .results import ApplyResult, ClusterKwargs, DestroyResult, Plan, RuleTable, SchedulerAddress
from .target import Target

# Where an undeclared rule in the group came from, as plans and tables say it.
ADDED_BY_HAND = "added by hand"
NO_LONGER_DECLARED = "no longer declared"
EARLIER_ME = "earlier address of 'me'"
NOT_DECLARED = "not declared"
_LISTED = 5


class QuotaError(IngressError):
    """The declared rules would not fit the group's quota; refused before any call."""


class GuardrailError(IngressError):
    """The declared rules break a team guardrail and no override covers them; refused before any
    write."""


# --------------------------------------------------------------------------------------------------
# Desired rules


def self_rule(group_id: str) -> Rule:
    from .aws import SELF_DESCRIPTION

    return Rule(ALL_PROTOCOLS, 0, 65535, group_id, SELF_DESCRIPTION)


@dataclass(frozen=True)
class Desired:
    """The rules as they will be sent, and the notes a person needs to read them: which layers they
    replace, what ``me`` became and when, and which written rules a wider one covers."""

    rules: list[Rule]
    notes: tuple[str, ...] = ()
    # The networks 'me' stands for among the rules, tagged as such so a new address replaces them.
    me: tuple[str, ...] = ()
    # The team's guardrails these rules break: not overridden (refused unless the group's rules
    # carry an earlier override), and overridden now, with the reason (tagged on those rules).
    refused: tuple[Breach, ...] = ()
    overridden: tuple[Breach, ...] = ()
    # Rule key -> the override tag an earlier apply left on a rule that still needs it.
    earlier: tuple[tuple[tuple, str], ...] = ()

    def overrides(self) -> dict[tuple, str]:
        """Rule key -> the override tag of the rules that need one now ("no-world: reason")."""
        tags: dict[tuple, list[str]] = collections.defaultdict(list)
        for breach in self.overridden:
            for rule in breach.rules:
                tags[rule.key].append(f"{breach.guardrail.name}: {breach.reason}")
        return {key: "; ".join(texts) for key, texts in tags.items()}

    def shown_overrides(self) -> dict[tuple, str]:
        """Every override the rules carry after an apply: earlier ones and new ones."""
        return {**dict(self.earlier), **self.overrides()}


# A plan lists this many covered rules one by one, then counts the rest.
_COVERED_SHOWN = 5


def declared(settings: Settings, overrides: dict[str, str] | None = None) -> Desired:
    """The declared rules as they will be sent: ``me`` resolved, compacted, checked against quotas
    and against the team's guardrails (``overrides``: guardrail name -> reason).

    The count is checked first, before ``me`` is looked up or anything is compacted: a person who
    pasted far too many rules hears so at once.
    """
    rules = list(settings.rules)
    _check_count(rules)
    notes = [note for note in (replaced_rules_note(settings), account_drift_note(settings)) if note]
    me: tuple[str, ...] = ()
    if any(r.source == "me" for r in rules):
        from ..reach import public_addresses

        found = public_addresses()
        if found is None:
            raise IngressError(
                [
                    "the rules use 'me', but this notebook's public address is unknown "
                    "(offline?); set coiled.client_public_ip in Dask's config, or write "
                    "the address instead of 'me'."
                ]
            )
        notes.append(f"me is {found.describe()}.")
        rules = resolve_me(rules, found.addresses)
        me = tuple(str(ipaddress.ip_network(a)) for a in found.addresses)
    found = compaction(rules)
    check_quota(found.rules)
    notes.extend(_covered_notes(found.covered))
    refused, overridden = settings.guardrails.check(found.rules, overrides)
    notes.extend(breach.sentence() for breach in overridden)
    if settings.account_unreadable is not None:
        notes.append(
            f"the account store could not be read ({settings.account_unreadable.code}), so the "
            "team's guardrails, if any, were not checked."
        )
    return Desired(
        found.rules,
        tuple(notes),
        tuple(m for m in me if any(r.source == m for r in found.rules)),
        tuple(refused),
        tuple(overridden),
    )


def enforce(wanted: Desired, groups, group) -> Desired:
    """Refuse, before any write, rules that break a team guardrail, unless the group already holds
    them with an override of that guardrail (an earlier apply's, tagged on the rules; their tags
    are read, one call, only when something breaks a guardrail)."""
    if not wanted.refused:
        return wanted
    from .aws import TAG_OVERRIDE

    tags = groups.rule_tags(group.group_id) if group is not None else {}

    def overridden_earlier(rule: Rule, name: str) -> str | None:
        for text in tags.get(rule.key, {}).get(TAG_OVERRIDE, "").split("; "):
            if text.startswith(f"{name}: "):
                return text.removeprefix(f"{name}: ")
        return None

    still = [
        breach
        for breach in wanted.refused
        if any(overridden_earlier(rule, breach.guardrail.name) is None for rule in breach.rules)
    ]
    if still:
        raise GuardrailError([breach.sentence() for breach in still])
    kept = [
        f"{rule} keeps its earlier override of guardrail {breach.guardrail.name}: "
        f"{overridden_earlier(rule, breach.guardrail.name)}"
        for breach in wanted.refused
        for rule in breach.rules
    ]
    earlier = tuple(
        (rule.key, tags[rule.key][TAG_OVERRIDE])
        for breach in wanted.refused
        for rule in breach.rules
    )
    return replace(wanted, notes=(*wanted.notes, *kept), refused=(), earlier=earlier)


def desired_rules(settings: Settings) -> list[Rule]:
    """The rules as they will be sent (see :func:`declared`)."""
    return declared(settings).rules


def _check_count(rules: list[Rule]) -> None:
    """Refuse, before any work, more rules than any security group holds: parsing refuses such an
    input, but a session's additions can pile up past it."""
    if len(rules) > MAX_RULES:
        raise QuotaError(
            [
                f"the settings hold {len(rules):,} rules; a security group holds at most "
                f"{MAX_RULES:,}, so write fewer (ranges like '8000-8100' and wider networks count "
                "as one)."
            ]
        )


def _covered_notes(covered) -> list[str]:
    notes = [f"{item}." for item in covered[:_COVERED_SHOWN]]
    rest = len(covered) - _COVERED_SHOWN
    if rest > 0:
        notes.append(
            f"{rest} more written rule{'s are' if rest > 1 else ' is'} covered by wider rules and "
            "not sent separately."
        )
    return notes


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
        f"port {ports} is open to the whole internet; restrict it to your network, or to this "
        "notebook's public address ('me'), before you apply.",
    )


# --------------------------------------------------------------------------------------------------
# Planning: what changes, in which order, and who wrote what is removed


def _family(rule: Rule, combined: bool) -> str:
    """The quota a rule counts against: AWS counts IPv4 (and group references) apart from IPv6; the
    sandbox (moto) counts every inbound rule against one limit."""
    if combined:
        return "inbound"
    return "IPv6" if rule.source_kind == "ipv6" else "IPv4"


def _overlaps(a: Rule, b: Rule) -> bool:
    """Do two rules admit some traffic in common?"""
    if ALL_PROTOCOLS not in (a.protocol, b.protocol) and a.protocol != b.protocol:
        return False
    if a.to_port < b.from_port or b.to_port < a.from_port:
        return False
    if a.network is None or b.network is None:
        return a.source == b.source
    return a.network.version == b.network.version and a.network.overlaps(b.network)


def _order(group, add: list[Rule], remove: list[Rule], combined: bool):
    """Split ``add`` into what fits beside the current rules (added first) and the rest (added after
    the removal), per quota family. Of the rules that must wait, those that re-admit traffic of a
    removed rule go first, so that as little as possible is missing in between.

    Returns (first, later, crowded), crowded listing (family, current count, added count)."""
    limit = int(option("rules-per-group"))
    count = collections.Counter(_family(r, combined) for r in group.rules)
    # A prefix list counts as one IPv4 entry on moto; on AWS as its max entries, not read here.
    count["inbound" if combined else "IPv4"] += len(group.unmanageable)
    first: list[Rule] = []
    later: list[Rule] = []
    crowded = []
    for family in sorted({_family(r, combined) for r in add}):
        adding = [r for r in add if _family(r, combined) == family]
        room = max(limit - count[family], 0)
        if len(adding) > room:
            crowded.append((family, count[family], len(adding)))
            adding.sort(key=lambda r: not any(_overlaps(r, old) for old in remove))
        first.extend(adding[:room])
        later.extend(adding[room:])
    return first, later, crowded


def _listing(rules) -> str:
    shown = ", ".join(str(r) for r in list(rules)[:_LISTED])
    more = len(rules) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _origins_of_undeclared(rules, owners: dict | None) -> list[str]:
    """Who put each undeclared rule there, from the rules' tags (``None``: tags not read)."""
    if owners is None:
        return [NOT_DECLARED] * len(rules)
    from .aws import TAG_ME, TAG_OWNER, TOOL

    out = []
    for rule in rules:
        tags = owners.get(rule.key, {})
        if tags.get(TAG_OWNER) != TOOL:
            out.append(ADDED_BY_HAND)
        elif rule.source in tags.get(TAG_ME, "").split():
            out.append(EARLIER_ME)
        else:
            out.append(NO_LONGER_DECLARED)
    return out


def _removal_notes(remove, origins, me) -> list[str]:
    by = collections.defaultdict(list)
    for rule, origin in zip(remove, origins):
        by[origin].append(rule)
    notes = []
    if by[ADDED_BY_HAND]:
        notes.append(
            f"{len(by[ADDED_BY_HAND])} rule(s) were added by hand, outside coiled_jupyter "
            f"({_listing(by[ADDED_BY_HAND])}); they will be removed only because this group is "
            "owned by coiled_jupyter, which keeps it to the declared rules (declare them to keep "
            "them)."
        )
    if by[NO_LONGER_DECLARED]:
        notes.append(
            f"{len(by[NO_LONGER_DECLARED])} rule(s) that coiled_jupyter wrote earlier are no "
            f"longer declared ({_listing(by[NO_LONGER_DECLARED])}); they will be removed."
        )
    if by[EARLIER_ME]:
        now = " and ".join(me) if me else "no longer used"
        notes.append(
            f"'me' is now {now}; the rule for its earlier address "
            f"({_listing(by[EARLIER_ME])}) will be removed, not kept beside it."
        )
    if by[NOT_DECLARED]:
        notes.append(
            f"{len(by[NOT_DECLARED])} rule(s) in the group are not declared in the settings "
            f"({_listing(by[NOT_DECLARED])}); they will be removed because this group is owned by "
            "coiled_jupyter (plan tells rules added by hand from earlier ones of coiled_jupyter)."
        )
    return notes


def _order_note(first, remove, later, crowded) -> str:
    limit = int(option("rules-per-group"))
    over = ", ".join(f"{c} + {n} {family} rules" for family, c, n in crowded)
    restored = [r for r in later if any(_overlaps(r, old) for old in remove)]
    if restored:
        moment = (
            f"traffic that both the removed rules and {_listing(restored)} admit is refused "
            "for that moment"
        )
    else:
        moment = "no source that is admitted before and after loses access, but the last rules "
        moment += "start to admit a moment later"
    return (
        f"access narrows briefly: the group cannot hold the current and the new rules at once "
        f"({over}, over the quota of {limit}), so the apply adds {len(first)}, removes "
        f"{len(remove)}, then adds the last {len(later)}; {moment}."
    )


def make_plan(
    t: Target,
    group,
    desired: list[Rule],
    origin: str,
    *,
    me: tuple[str, ...] = (),
    owners: dict | None = None,
) -> Plan:
    """Diff the desired rules (plus the group's self rule) against the group as read.

    ``owners`` (rule key -> tags, from :meth:`.aws.SecurityGroups.rule_tags`) tells who wrote the
    rules that will be removed; without it they are only "not declared"."""
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
            (*_backend_warnings(t), *_warnings(desired)),
            me=me,
        )
    wanted = {r.key: r for r in [*desired, self_rule(group.group_id)]}
    current = {r.key: r for r in group.rules}
    add = sorted((r for k, r in wanted.items() if k not in current), key=sort_key)
    remove = sorted((r for k, r in current.items() if k not in wanted), key=sort_key)
    both = [k for k in current if k in wanted]
    # The self rule's description is this tool's own; a hand-edited one is left (moto cannot
    # update descriptions of rules from a group).
    update = sorted(
        (
            wanted[k]
            for k in both
            if wanted[k].description != current[k].description and k[3] != group.group_id
        ),
        key=sort_key,
    )
    updated = {r.key for r in update}
    keep = sorted((current[k] for k in both if k not in updated), key=sort_key)
    first, later, crowded = _order(group, add, remove, t.backend == "sandbox")
    origins = _origins_of_undeclared(remove, owners)
    notes = _removal_notes(remove, origins, me)
    if later:
        notes.append(_order_note(first, remove, later, crowded))
    for item in group.unmanageable:
        notes.append(
            f"the group also holds {item}, which coiled_jupyter cannot manage; it is left as it is."
        )
    return Plan(
        t,
        group.account_id,
        group.group_id,
        tuple(sorted(first, key=sort_key)) + tuple(sorted(later, key=sort_key)),
        tuple(remove),
        tuple(keep),
        origin,
        tuple(notes),
        (*_backend_warnings(t), *_warnings(desired)),
        update=tuple(update),
        previous=tuple(current[r.key].description for r in update),
        add_later=tuple(sorted(later, key=sort_key)),
        remove_origins=tuple(origins),
        me=me,
    )


def _owners_if_needed(groups, group, desired) -> dict | None:
    """The rules' tags, read (one call) only when the group holds rules that are not declared."""
    if group is None:
        return None
    declared = {r.key for r in desired} | {self_rule(group.group_id).key}
    if all(r.key in declared for r in group.rules):
        return None
    return groups.rule_tags(group.group_id)


# --------------------------------------------------------------------------------------------------
# Operations


def _groups(t: Target):
    from .aws import SecurityGroups

    return SecurityGroups(t.connection())


def plan(t: Target, settings: Settings, *, progress=None, overrides=None) -> Plan:
    """What :func:`apply` would change for this cluster: one read, and a second (the rules' tags) when
    the group holds rules that are not declared, to say who wrote them. No change. ``progress`` hears
    a sentence before a wait (the sandbox's first start); ``overrides``: team guardrails overridden
    (name -> reason)."""
    wanted = declared(settings, overrides)
    t = t.connected(progress=progress)
    groups = _groups(t)
    group = groups.find(t.cluster, t.vpc_id)
    if group is None:
        # apply would be refused at CreateSecurityGroup; the plan must say so first.
        groups.refuse_foreign_name(t.cluster, t.vpc_id)
    wanted = enforce(wanted, groups, group)
    owners = _owners_if_needed(groups, group, wanted.rules)
    plan = make_plan(t, group, wanted.rules, settings.ingress.origin, me=wanted.me, owners=owners)
    return _noted(plan, wanted, settings)


def _noted(plan: Plan, wanted: Desired, settings: Settings) -> Plan:
    """The plan with the notes of the desired rules first (replaced layers, ``me``, covered), the
    kind of cluster and ports it assumed, and, first of its warnings, the sentence saying when no
    client (or not this notebook) will connect to the port the scheduler listens on."""
    from ..reach import check

    model = port_model(plan.target.cluster)
    reach = check(settings.rules, settings.use_scheduler_public_ip.value, model=model)
    return replace(
        plan,
        notes=(*wanted.notes, *plan.notes),
        warnings=(*reach.connect_warnings, *plan.warnings),
        ports=model,
    )


def port_model(cluster: str):
    """The kind of cluster and its ports (see :mod:`coiled_jupyter.ports`)."""
    from ..ports import model

    return model(cluster)


def apply(t: Target, settings: Settings, *, on_wait=None, overrides=None) -> ApplyResult:
    """Create or reconcile the cluster's group to the effective settings, and read it back.

    EC2 calls, whatever the number of rules: no change takes 1 (find); a fresh cluster 4 (find,
    create, authorize, the verifying read); a change 4 (find, authorize, revoke, read); one more
    authorize when the quota makes the change go in steps; a description change adds the update.
    The result table is the group as that last read reports it; if it does not hold these settings
    (another writer changed it meanwhile, which a kernel on another machine can), the apply says so
    and what differs (:class:`CloudError` ``ConcurrentChange``), never success. A write that fails
    says what it left the group holding. ``on_wait`` is told, with a sentence, when another
    kernel's apply to this cluster makes it wait.
    """
    wanted = declared(settings, overrides)
    desired, me = wanted.rules, wanted.me
    t = t.connected(progress=on_wait)
    groups = _groups(t)
    with _apply_lock(t, on_wait):
        group = groups.find(t.cluster, t.vpc_id)
        wanted = enforce(wanted, groups, group)
        carried = _noted(
            make_plan(t, group, desired, settings.ingress.origin, me=me), wanted, settings
        )
        if not carried.changes:
            return ApplyResult(
                carried,
                _table(t, group, settings, desired, overrides=wanted.shown_overrides()),
            )
        tagged = wanted.overrides()
        group_id = group.group_id if group is not None else None
        try:
            if group_id is None:
                group_id = groups.create(t.cluster, t.vpc_id)
                _authorize(groups, group_id, [*desired, self_rule(group_id)], me, tagged)
            else:
                later = set(carried.add_later)
                _authorize(groups, group_id, [r for r in carried.add if r not in later], me, tagged)
                groups.revoke(group_id, list(carried.remove))
                _authorize(groups, group_id, list(carried.add_later), me, tagged)
                if carried.update:
                    groups.update_descriptions(group_id, list(carried.update))
        except CloudError as error:
            error.tell(_left_behind(groups, group_id, group, desired))
            raise
        not_kept = history.record(t, group, group_id, carried)  # also when another writer ...
        final = _verified(t, groups, group_id, desired)  # ... changed the group meanwhile
    kept_old = [
        r
        for r in carried.update
        if any(h.key == r.key and h.description != r.description for h in final.rules)
    ]
    warnings = tuple(
        f"the cloud kept the old description of {r}; set it in the console, or run apply again."
        for r in kept_old
    ) + ((not_kept,) if not_kept else ())
    return ApplyResult(
        carried,
        _table(t, final, settings, desired, warnings=warnings, overrides=wanted.shown_overrides()),
    )


def _authorize(groups, group_id: str, rules: list[Rule], me, overrides: dict[tuple, str]) -> None:
    """Authorize ``rules``: those that override a guardrail in a call of their own per override,
    since a call's tags cover every rule of it (one call more only when an override is used)."""
    by_override: dict[str, list[Rule]] = collections.defaultdict(list)
    for rule in rules:
        by_override[overrides.get(rule.key, "")].append(rule)
    for override, batch in sorted(by_override.items()):
        groups.authorize(group_id, batch, me, override)


# Pauses before reading a group again when it does not hold what an apply wrote: AWS's reads are
# eventually consistent, so a difference must last before it is taken for another writer's change.
_SETTLE = (0.2, 0.4, 0.8)


def _verified(t: Target, groups, group_id: str, desired: list[Rule]):
    """The group as read after the writes, if it holds exactly the declared rules and its own;
    else a ConcurrentChange that names what differs."""
    wanted = {r.key: r for r in [*desired, self_rule(group_id)]}
    for delay in (*_SETTLE, None):
        final = groups.get(group_id)
        held = {r.key: r for r in final.rules}
        if held.keys() == wanted.keys() or delay is None:
            break
        time.sleep(delay)
    if held.keys() == wanted.keys():
        return final
    extra = [r for k, r in held.items() if k not in wanted]
    missing = [r for k, r in wanted.items() if k not in held]
    said = []
    if extra:
        said.append(
            f"holds {_listing(extra)}, which these settings do not declare (it admits more than "
            "they say)"
        )
    if missing:
        said.append(f"lacks {_listing(missing)}")
    raise CloudError(
        "ConcurrentChange",
        f"another writer changed group {group_id} while this apply ran: it now "
        f"{' and '.join(said)}. Run apply again to make it hold these settings (undoing the "
        f"other change), or find who else applies to cluster {t.cluster!r}.",
    )


def _left_behind(groups, group_id: str | None, before, desired: list[Rule]) -> str:
    """What a failed write left the group holding (one read), measured against the old rules
    (``before``, None for a new group) and the declared ones: above all, whether it is now wider
    than either."""
    if group_id is None:
        return "No group was created; nothing was changed."
    try:
        now = groups.get(group_id)
    except CloudError:
        return (
            f"What group {group_id} holds now could not be read: it may hold the old rules and "
            "part of the new ones, admitting more than either; run plan to see, then apply "
            "again."
        )
    own = self_rule(group_id).key
    held = {r.key: r for r in now.rules if r.key != own}
    old = {r.key for r in (before.rules if before is not None else ()) if r.key != own}
    new = {r.key for r in desired}
    beyond_new = [r for k, r in held.items() if k not in new]
    beyond_old = [r for k, r in held.items() if k not in old]
    if held.keys() == old:
        return f"Group {group_id} was left as it was."
    if held.keys() == new:
        return f"Group {group_id} holds the declared rules; run apply again to finish."
    if beyond_new and beyond_old:
        return (
            f"Group {group_id} is left holding old rules and part of the new ones, wider than "
            f"either: it admits {_listing(beyond_new)} beyond the new settings and "
            f"{_listing(beyond_old)} beyond the old; run apply again to finish."
        )
    if beyond_new:
        return (
            f"Group {group_id} is left holding part of the old rules, among them "
            f"{_listing(beyond_new)}, which the new settings do not declare; run apply again to "
            "finish."
        )
    missing = [r for r in desired if r.key not in held]
    return (
        f"Group {group_id} is left holding {len(held)} of the {len(new)} declared rules "
        f"(missing {_listing(missing)}); run apply again to finish."
    )


def describe(t: Target, settings: Settings, *, progress=None) -> RuleTable:
    """The group's rules as the cloud reports them (one read; a second for the rules' tags when some
    are not declared), each with its origin."""
    t = t.connected(progress=progress)
    groups = _groups(t)
    group = groups.find(t.cluster, t.vpc_id)
    try:
        desired = desired_rules(settings)
    except IngressError:
        desired = []
    owners = _owners_if_needed(groups, group, desired)
    if owners is None and group is not None and settings.guardrails.rails:
        owners = groups.rule_tags(group.group_id)  # to show the rules' guardrail overrides
    from .aws import TAG_OVERRIDE

    overrides = {
        key: tags[TAG_OVERRIDE] for key, tags in (owners or {}).items() if TAG_OVERRIDE in tags
    }
    return _table(t, group, settings, desired, owners=owners, overrides=overrides)


def destroy(t: Target, *, on_wait=None) -> DestroyResult:
    """Delete the cluster's group, if it exists and is owned by coiled_jupyter."""
    t = t.connected(progress=on_wait)
    groups = _groups(t)
    with _apply_lock(t, on_wait):
        group = groups.find(t.cluster, t.vpc_id)
        if group is None:
            return DestroyResult(t, None, False)
        return DestroyResult(t, group.group_id, groups.delete(group.group_id), group.account_id)


def _table(
    t: Target,
    group,
    settings: Settings,
    desired: list[Rule],
    *,
    owners: dict | None = None,
    warnings: tuple[str, ...] = (),
    overrides: dict[tuple, str] | None = None,
) -> RuleTable:
    """The group, each rule with its origin (``owners``: the rules' tags, to say who wrote the
    undeclared ones; ``overrides``: rule key -> the team guardrails it overrides, and why), and the
    kind of cluster and ports it was read for: a group whose rules admit no one on the scheduler's
    port says so."""
    from ..reach import lockout

    overrides = overrides or {}
    model = port_model(t.cluster)
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
            ports=model,
        )
    declared = {r.key for r in desired}
    undeclared = [r for r in group.rules if r.key not in declared and r.source != group.group_id]
    found = dict(zip((r.key for r in undeclared), _origins_of_undeclared(undeclared, owners)))
    origins = []
    for rule in group.rules:
        if rule.source == group.group_id:
            origins.append("this group (cluster-internal)")
        elif rule.key in declared:
            origins.append(settings.ingress.origin)
        else:
            origins.append(found[rule.key])
        if rule.key in overrides:
            origins[-1] += f"; overrides guardrail {overrides[rule.key]}"
    return RuleTable(
        t,
        group.account_id,
        group.group_id,
        group.name,
        group.vpc_id or None,
        group.rules,
        tuple(origins),
        group.unmanageable,
        (
            *_backend_warnings(t),
            *filter(None, [lockout([r for r in group.rules if r.source != group.group_id], model)]),
            *_warnings(group.rules),
            *warnings,
        ),
        ports=model,
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
        t, scheduler["InstanceId"], ip, public, port_model(t.cluster).scheduler, group.account_id
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
    t: Target, settings: Settings, backend_options=None, overrides=None
) -> ClusterKwargs:
    """What to hand to ``coiled.Cluster(**kwargs)``, and ``.security_group_id`` for other launchers.

    ``backend_options["ingress"]`` is exactly Coiled's ``FirewallOptions`` list (integer ports, a
    CIDR, no other key; see :func:`~coiled_jupyter.rules.to_coiled`), because ``coiled.Cluster``
    applies ingress only when it is passed this way: it never reads it from Dask's config. A group
    in the sandbox is a moto group that no real launcher can use, so it is kept apart, as
    ``.sandbox_group_id``, and ``.security_group_id`` stays None.
    """
    wanted = declared(settings, overrides)
    t = t.connected()
    groups = _groups(t)
    group = groups.find(t.cluster, t.vpc_id)
    enforce(wanted, groups, group)
    kwargs, notes = _coiled_kwargs(t, settings, backend_options, wanted.rules)
    if group is None or t.backend != "sandbox":
        return ClusterKwargs(kwargs, group.group_id if group else None, notes=notes)
    return ClusterKwargs(
        kwargs,
        None,
        sandbox_group_id=group.group_id,
        notes=(
            *notes,
            f"the group {group.group_id} exists only in the sandbox (a local moto server), so no "
            "real launcher can use it and security_group_id is None; set coiled-jupyter.backend "
            "to aws and apply to get a real group.",
        ),
    )


def _coiled_kwargs(
    t: Target, settings: Settings, backend_options, desired: list[Rule]
) -> tuple[dict, tuple[str, ...]]:
    """``coiled.Cluster``'s keywords for the rules: Coiled's network keywords
    (``allow_ingress_from=...``) when the rules of a Coiled cluster can be said that way, else
    ``backend_options={"ingress": [...]}``; never both, which Coiled refuses
    (``ArgumentCombinationError``). With explicit ingress, a ``coiled.scheduler_port`` in Dask's
    config makes Coiled refuse too: a warning says so. ``desired``: the rules as they will be sent
    (``me`` resolved), for the ingress."""
    import warnings

    import dask.config

    from ..network_args import from_rules
    from ..ports import COILED, COILED_SCHEDULER, SCHEDULER_PORT_KEY
    from ..rules import to_coiled

    model = port_model(t.cluster)
    options = dict(backend_options or {})
    options.pop("firewall", None)
    options.pop("ingress", None)
    public_ip = {"use_scheduler_public_ip": settings.use_scheduler_public_ip.value}
    keywords = None
    if model.kind == COILED:
        keywords = from_rules(
            list(settings.rules),
            scheduler=model.scheduler,
            use_dashboard_https=model.dashboard_https,
        )
    if keywords is not None:
        return {
            **keywords.kwargs(),
            **({"backend_options": options} if options else {}),
            **public_ip,
        }, ()
    options["ingress"] = to_coiled(desired, client=True)
    kwargs = {"backend_options": options, **public_ip}
    configured = dask.config.get(SCHEDULER_PORT_KEY, None)
    if model.kind == COILED and configured is not None:
        sentence = (
            f"Dask's config holds {SCHEDULER_PORT_KEY} ({configured}), and coiled.Cluster() refuses "
            "it beside explicit ingress (ArgumentCombinationError): remove it from the config and "
            f"pass scheduler_options={{'port': {configured}}}, or say the rules with Coiled's "
            "keywords (allow_ingress_from=...)."
        )
        warnings.warn(sentence, UserWarning, stacklevel=4)
        return kwargs, (sentence,)
    if model.kind == COILED and model.scheduler != COILED_SCHEDULER:
        kwargs["scheduler_options"] = {"port": model.scheduler}
    return kwargs, ()
