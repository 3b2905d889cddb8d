"""The notebook session: every operation a front end offers, as one function each.

The magics, the ipywidgets panel and the REST handlers call exactly these functions and get the same
result objects back; a front end only parses what was typed and shows the result. Each edit validates
everything before it changes anything, so a bad input changes nothing. Data flows one way: front end ->
this module -> :mod:`.settings` (layers) and :mod:`.provision` (the cloud) -> a result object -> its
payload -> :mod:`.display`.

Settings work (show, add, remove, set, clear, reset, the toggle, save to the user file) makes no
cloud call and starts no server: it takes the account layer as this process last read or wrote it, and
the settings view says when it was not read. Cloud work (plan, apply, describe, ...) and
:func:`effective_settings` read the account store (one SSM read; a sandbox that is not running holds no
account defaults, so it is not started to ask). Where a layer that was not read could make an edit
admit more than the person wrote (``remove`` from the built-in default, pinning everything), the edit
is refused with the way to read it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import replace

from .errors import CoiledJupyterError
from .rules import IngressError, Rule, canonical, parse_rule, subtract
from .settings import (
    SESSION,
    Layer,
    LayerValues,
    Resolved,
    SessionValues,
    Settings,
    coiled_toggle,
    parse_coiled_options,
)
from .settings import effective_settings as resolve_settings
from .state import change_count, note_change
from .strict_yaml import excerpt

SCOPES = ("user", "account")
SCHEDULER_IP_WORDS = ("public", "private")
Progress = Callable[[str], None] | None
_KEEP = object()


def _target(cluster=None, *, backend=None, region=None, vpc_id=None):
    from .provision.target import target

    return target(cluster, backend=backend, region=region, vpc_id=vpc_id)


def _read_settings(t, backend_options=None) -> Settings:
    """For cloud work: every layer, the account store of ``t``'s backend read now."""
    from .provision.account import load_account_layer

    return resolve_settings(backend_options, account=lambda: load_account_layer(t))


def _settings(t, backend_options=None, session: SessionValues | None = None) -> Settings:
    """For settings work: every layer, the account layer as known without a cloud call
    (``session``: prospective values)."""
    from .provision.account import known_account_layer

    return resolve_settings(
        backend_options, account=lambda: known_account_layer(t), session=session
    )


def effective_settings(backend_options: dict | None = None, **target_options) -> Settings:
    """The effective settings, each value with its origin (the layer, and the file or variable).

    The account store is read (one SSM call), so the answer holds whatever layer decides it."""
    return _read_settings(_target(**target_options), backend_options)


# --------------------------------------------------------------------------------------------------
# Settings work: no cloud call


def show(
    cluster=None, *, reach: bool = True, backend_options: dict | None = None, **target_options
):
    """The effective settings for a cluster, with this notebook's reachability verdict."""
    t = _target(cluster, **target_options)
    return _view(t, _settings(t, backend_options), reach=reach)


def _view(t, settings: Settings, *, reach: bool = True):
    """``settings`` as the settings view, with the reachability verdict unless ``reach`` is False."""
    from .provision.results import SettingsView

    reachability = None
    if reach:
        from .reach import check

        reachability = check(settings.rules, settings.use_scheduler_public_ip.value)
    return SettingsView(t, settings, reachability, coiled_toggle())


def _edit(t, *, ingress=_KEEP, use_scheduler_public_ip=_KEEP, built_on=None):
    """Replace what the session sets (``_KEEP`` keeps a value, ``None`` drops it), then show it.

    ``built_on``: the account layer new rules were edited from (see :func:`_rules_to_edit`)."""
    current = SESSION.values
    values = SessionValues(
        current.ingress
        if ingress is _KEEP
        else (None if ingress is None else tuple(canonical(ingress))),
        current.use_scheduler_public_ip
        if use_scheduler_public_ip is _KEEP
        else use_scheduler_public_ip,
        current.built_on if ingress is _KEEP else built_on,
    )
    # The new settings are resolved before the change: if a layer they need cannot be read (a
    # config file, the account store), the session is left as it was. Once made, the change is
    # what they describe, so they are shown as they are, not resolved a second time.
    settings = _settings(t, session=values)
    SESSION.replace(values)
    return _view(t, settings)


def _built_on(settings: Settings) -> LayerValues | None:
    """The account layer that rules edited from ``settings`` are built on: the account layer when it
    decides the rules, what the session was built on when the session does, else None."""
    if settings.ingress.layer == Layer.ACCOUNT:
        return settings.layer(Layer.ACCOUNT)
    if settings.ingress.layer == Layer.SESSION:
        return SESSION.values.built_on
    return None


def _rules_to_edit(t) -> tuple[list[Rule], LayerValues | None]:
    """What ``add`` starts from: the effective rules, except the built-in default; and the account
    layer they are built on.

    Declaring rules replaces Coiled's world-open default, so ``add`` over it starts from no rules:
    keeping 0.0.0.0/0 under the person's new rule would leave the cluster open while the table
    suggests it was restricted.
    """
    settings = _settings(t)
    if settings.ingress.layer == Layer.DEFAULT:
        return [], None
    return list(settings.rules), _built_on(settings)


def _rule_input(ports, source, protocol, description) -> dict:
    if isinstance(ports, str):
        ports = ports.split(",")
    item: dict = {"ports": ports, "cidr": source}
    if protocol is not None:
        item["protocol"] = protocol
    if description is not None:
        item["description"] = description
    return item


def check_rule(ports, source, *, protocol=None, description=None) -> list[str]:
    """The sentences for one rule as a person typed it ([] when it is fine); changes nothing."""
    try:
        parse_rule(_rule_input(ports, source, protocol, description), where="rule")
    except IngressError as error:
        return error.problems
    return []


def add(ports, source, *, protocol=None, description=None, cluster=None):
    """Admit ``source`` on ``ports`` in this session (``ports``: ``8786``, ``"8786,8787"``, ...)."""
    rules = parse_rule(_rule_input(ports, source, protocol, description), where="rule")
    t = _target(cluster)
    base, built_on = _rules_to_edit(t)
    return _edit(t, ingress=[*base, *rules], built_on=built_on)


def remove(ports, source, *, protocol=None, cluster=None):
    """Remove exactly these rules from the session (a port inside a range is cut out of it)."""
    rules = parse_rule(_rule_input(ports, source, protocol, None), where="rule")
    t = _target(cluster)
    settings = _settings(t)
    if settings.ingress.layer == Layer.DEFAULT and not settings.account_read:
        # What is left of the world-open default could replace narrower team rules.
        raise CoiledJupyterError(
            "the rules to remove from are not known here: the account defaults were not read "
            "(settings work makes no cloud call), and what is left of the built-in default would "
            "replace them if your team set some. Run a plan (%coiled_ingress plan) to read them "
            "and remove again, or declare the rules you want with %coiled_ingress set."
        )
    return _edit(
        t,
        ingress=subtract(settings.rules, rules, origin=settings.ingress.origin),
        built_on=_built_on(settings),
    )


def set_settings(value, *, cluster=None, label: str = "the settings"):
    """Set the session from a rule list, ``{ingress, use_scheduler_public_ip}`` or a ``coiled:``
    snippet as in Coiled's documentation, given as YAML/JSON text or Python values. ``label`` names
    the input in error sentences (``the cell``)."""
    rules, public_ip = parse_coiled_options(value, where=label)
    return _edit(
        _target(cluster),
        ingress=rules if rules is not None else _KEEP,
        use_scheduler_public_ip=public_ip if public_ip is not None else _KEEP,
    )


def clear(cluster=None):
    """No rules at all: only the cluster's own internal traffic."""
    return _edit(_target(cluster), ingress=[])


def reset(cluster=None):
    """Drop this session's settings: back to the Dask config, account and built-in defaults."""
    return _edit(_target(cluster), ingress=None, use_scheduler_public_ip=None)


def _one_of(value, words: tuple[str, ...], sentence: str) -> str:
    """``value`` as one of ``words`` (case and spaces ignored), or ``sentence`` with a did-you-mean;
    ``sentence`` has ``{value}`` and ``{hint}`` fields."""
    word = value.strip().lower() if isinstance(value, str) else value
    if word in words:
        return word
    close = difflib.get_close_matches(str(word), words, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise IngressError([sentence.format(value=excerpt(value), hint=hint)])


def parse_scheduler_ip(choice) -> bool:
    """``public``/``private`` (or a bool) as the value of ``use_scheduler_public_ip``."""
    if isinstance(choice, bool):
        return choice
    word = _one_of(
        choice,
        SCHEDULER_IP_WORDS,
        "the scheduler IP is 'public' or 'private', not {value}; {hint}public connects clients "
        "on the scheduler's public IP, private on its private IP (VPN or peered VPC).",
    )
    return word == "public"


def set_scheduler_ip(choice, *, cluster=None):
    """Connect clients on the scheduler's public or private IP, for this session."""
    public_ip = parse_scheduler_ip(choice)
    return _edit(_target(cluster), use_scheduler_public_ip=public_ip)


def subscribe(callback: Callable[[SessionValues], None]) -> Callable[[], None]:
    """Call ``callback(values)`` after every session change; returns the unsubscribe function."""
    return SESSION.subscribe(callback)


def save(scope: str = "user", *, cluster=None, everything: bool = False):
    """Keep what this session sets: ``user`` in Dask's config file, ``account`` for the whole team.

    Only the values the session sets are written (the rules, the toggle, or both), never a copy of
    the defaults, so a saved file does not pin the built-in default or a stale copy of team defaults.
    ``everything=True`` pins the effective settings whatever layer they come from (e.g. to keep the
    team's rules on a machine that cannot read the account store); the result says what was pinned,
    since later changes to those layers no longer reach the saved copy.
    """
    from .provision.results import SaveResult

    word = _one_of(
        scope,
        SCOPES,
        "scope {value} is not known; {hint}use 'user' (your Dask config file) or 'account' "
        "(account-wide defaults for the team).",
    )
    t = _target(cluster)
    notes: tuple[str, ...] = ()
    if everything:
        settings = _settings(t)
        if not settings.account_read and Layer.DEFAULT in (
            settings.ingress.layer,
            settings.use_scheduler_public_ip.layer,
        ):
            raise CoiledJupyterError(
                "the effective settings are not known here: the account defaults were not read "
                "(settings work makes no cloud call), so pinning everything could write the "
                "world-open built-in default over your team's rules. Run a plan "
                "(%coiled_ingress plan) to read them, then save again."
            )
        values = SessionValues(tuple(settings.rules), settings.use_scheduler_public_ip.value)
        pinned = [
            f"{name} from {resolved.origin}"
            for name, resolved in (
                ("the rules", settings.ingress),
                ("use_scheduler_public_ip", settings.use_scheduler_public_ip),
            )
            if resolved.layer != Layer.SESSION
        ]
        if pinned:
            notes = (
                f"pinned {' and '.join(pinned)} as they are now; later changes there no longer "
                "reach this copy.",
            )
    else:
        values = SESSION.values
    if values.ingress is None and values.use_scheduler_public_ip is None:
        raise CoiledJupyterError(
            "this session sets no rules and no scheduler IP, so there is nothing to save; change "
            "them first (e.g. %coiled_ingress add 8786 10.1.0.0/16), or pin the effective "
            "settings with everything=True."
        )
    if word == "user":
        from .config_file import save_config

        location = str(save_config(values.ingress, values.use_scheduler_public_ip))
    else:
        from .provision.account import save_account

        location = save_account(t.connected(), values.ingress, values.use_scheduler_public_ip)
    note_change()
    return SaveResult(t, word, location, values.ingress, values.use_scheduler_public_ip, notes)


# --------------------------------------------------------------------------------------------------
# Cloud work


def plan(cluster=None, *, backend_options=None, progress: Progress = None, **target_options):
    """What :func:`apply` would change for this cluster (one read, no change)."""
    from .provision import reconcile

    t = _target(cluster, **target_options)
    return reconcile.plan(t, _read_settings(t, backend_options), progress=progress)


def apply(cluster=None, *, backend_options=None, progress: Progress = None, **target_options):
    """Make the cluster's security group match the effective settings, as the cloud confirmed it."""
    from .provision import reconcile

    t = _target(cluster, **target_options)
    try:
        return reconcile.apply(t, _read_settings(t, backend_options), on_wait=progress)
    finally:
        note_change()


def set_and_apply(value, *, cluster=None, progress: Progress = None, label: str = "the settings"):
    """Set the session from ``value`` and apply, all or nothing: the rules are checked as they will
    be sent (``me`` resolved, quota) before the session changes, and a failed apply restores it."""
    from .provision import reconcile

    rules, public_ip = parse_coiled_options(value, where=label)
    t = _target(cluster)
    current = _settings(t)
    if rules is not None:
        prospective = replace(current, ingress=Resolved(rules, Layer.SESSION, SESSION.detail))
        reconcile.desired_rules(prospective)
    before = SESSION.values
    SESSION.replace(
        SessionValues(
            tuple(rules) if rules is not None else before.ingress,
            public_ip if public_ip is not None else before.use_scheduler_public_ip,
            None if rules is not None else before.built_on,
        )
    )
    try:
        return reconcile.apply(t, _read_settings(t), on_wait=progress)
    except BaseException:
        SESSION.replace(before)
        raise
    finally:
        note_change()


def describe(cluster=None, *, backend_options=None, progress: Progress = None, **target_options):
    """The group's rules as the cloud reports them, each with its origin."""
    from .provision import reconcile

    t = _target(cluster, **target_options)
    return reconcile.describe(t, _read_settings(t, backend_options), progress=progress)


def destroy(cluster=None, *, progress: Progress = None, **target_options):
    """Delete the cluster's security group, if it exists and is owned by coiled_jupyter."""
    from .provision import reconcile

    try:
        return reconcile.destroy(_target(cluster, **target_options), on_wait=progress)
    finally:
        note_change()


def changes() -> int:
    """How many applies, destroys and saves this machine has seen (any kernel, any server): a view
    that shows settings or a group reads again when it grows. Reads one file's size, nothing else."""
    return change_count()


def scheduler_address(cluster=None, *, backend_options=None, **target_options):
    """The address a client should connect to, by ``use_scheduler_public_ip``."""
    from .provision import reconcile

    t = _target(cluster, **target_options)
    return reconcile.scheduler_address(t, _read_settings(t, backend_options))


def cluster_kwargs(cluster=None, *, backend_options=None, **target_options):
    """What to hand to ``coiled.Cluster(**kwargs)``, and ``.security_group_id`` for other launchers."""
    from .provision import reconcile

    t = _target(cluster, **target_options)
    return reconcile.cluster_kwargs(t, _read_settings(t, backend_options), backend_options)
