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

import contextlib
import difflib
from collections.abc import Callable
from dataclasses import replace

from .errors import CoiledJupyterError
from .export import FORMATS as EXPORT_FORMATS
from .policy import NAMES as GUARDRAIL_NAMES
from .ports import KINDS  # noqa: F401 (for front ends)
from .rules import PROTOCOLS, IngressError, Rule, canonical, load_text, parse_rule, subtract
from .settings import (
    SESSION,
    Layer,
    LayerValues,
    Resolved,
    SessionChange,
    SessionValues,
    Settings,
    coiled_toggle,
    default_cluster,
    parse_coiled_options,
)
from .settings import effective_settings as resolve_settings
from .state import change_count, note_change
from .strict_yaml import check_size, check_value, excerpt, load_json

# For the front ends, which import only this module, display and errors (docs/architecture.md):
# the protocols a rule may name, the export formats, the guardrails' names, and the strict reader of
# what a person types.
__all__ = [
    "EXPORT_FORMATS",
    "GUARDRAIL_NAMES",
    "PROTOCOLS",
    "check_size",
    "check_value",
    "excerpt",
    "load_json",
    "load_text",
]

SCOPES = ("user", "account")
_SAVED_WHERE = {"user": "Dask config file's settings", "account": "account defaults"}
SCHEDULER_IP_WORDS = ("public", "private")
Progress = Callable[[str], None] | None
_KEEP = object()


def _target(cluster=None, *, backend=None, region=None, vpc_id=None):
    from .provision.target import target

    return target(cluster, backend=backend, region=region, vpc_id=vpc_id)


def _model(t):
    """The kind of cluster ``t`` is and the ports it listens on (see :mod:`.ports`)."""
    from .ports import model

    return model(t.cluster)


def _read_settings(t, backend_options=None) -> Settings:
    """For cloud work: every layer, the account store of ``t``'s backend read now."""
    from .provision.account import load_account_layer

    return resolve_settings(
        backend_options,
        account=lambda: load_account_layer(t),
        cluster=t.cluster,
        model=_model(t),
    )


def _settings(t, backend_options=None, session: SessionValues | None = None) -> Settings:
    """For settings work: every layer, the account layer as known without a cloud call
    (``session``: prospective values)."""
    from .provision.account import known_account_layer

    return resolve_settings(
        backend_options,
        account=lambda: known_account_layer(t),
        session=session,
        cluster=t.cluster,
        model=_model(t),
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

    model = _model(t)
    reachability = None
    if reach:
        from .reach import check

        reachability = check(
            settings.rules,
            settings.use_scheduler_public_ip.value,
            declared=settings.ingress.layer != Layer.DEFAULT,
            model=model,
        )
    return SettingsView(
        t,
        settings,
        reachability,
        coiled_toggle(),
        session_clusters=SESSION.clusters(),
        default_cluster=default_cluster(),
        session_version=SESSION.version(t.cluster),
        ports=model,
    )


def _edit(t, change: Callable[[], dict], *, based_on: int | None = None):
    """Change what the session sets for ``t``'s cluster, then show it.

    ``change()`` is called under the session's lock, so it reads the session as the edit will
    change it (edits are serialised), and returns the parts to replace: ``ingress``,
    ``use_scheduler_public_ip`` (a missing key keeps the value, ``None`` drops it) and, with
    ``ingress``, ``built_on`` (the account layer the rules were edited from, see
    :func:`_rules_to_edit`). ``based_on``: the session version the edit was made from; if the
    cluster's session changed since, the edit is refused (:class:`~.errors.StaleEdit`).
    """
    with SESSION.lock:
        parts = change()
        current = SESSION.of(t.cluster)
        ingress = parts.get("ingress", _KEEP)
        values = SessionValues(
            current.ingress
            if ingress is _KEEP
            else (None if ingress is None else tuple(canonical(ingress))),
            parts.get("use_scheduler_public_ip", current.use_scheduler_public_ip),
            current.built_on if ingress is _KEEP else parts.get("built_on"),
        )
        # The new settings are resolved before the change: if a layer they need cannot be read (a
        # config file, the account store), the session is left as it was. Once made, the change is
        # what they describe, so they are shown as they are, not resolved a second time.
        settings = _settings(t, session=values)
        SESSION.replace(t.cluster, values, based_on=based_on)
    return _view(t, settings)


def _built_on(settings: Settings) -> LayerValues | None:
    """The account layer that rules edited from ``settings`` are built on: the account layer when it
    decides the rules, what the session was built on when the session does, else None."""
    if settings.ingress.layer == Layer.ACCOUNT:
        return settings.layer(Layer.ACCOUNT)
    if settings.ingress.layer == Layer.SESSION:
        session = settings.layer(Layer.SESSION)
        return session.built_on if session is not None else None
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

    def change() -> dict:
        base, built_on = _rules_to_edit(t)
        return {"ingress": [*base, *rules], "built_on": built_on}

    return _edit(t, change)


def remove(ports, source, *, protocol=None, cluster=None):
    """Remove exactly these rules from the session (a port inside a range is cut out of it)."""
    rules = parse_rule(_rule_input(ports, source, protocol, None), where="rule")
    t = _target(cluster)

    def change() -> dict:
        settings = _settings(t)
        if settings.ingress.layer == Layer.DEFAULT and not settings.account_read:
            # What is left of the world-open default could replace narrower team rules.
            raise CoiledJupyterError(
                "the rules to remove from are not known here: the account defaults were not read "
                "(settings work makes no cloud call), and what is left of the built-in default "
                "would replace them if your team set some. Run a plan (%coiled_ingress plan) to "
                "read them and remove again, or declare the rules you want with "
                "%coiled_ingress set."
            )
        return {
            "ingress": subtract(settings.rules, rules, origin=settings.ingress.origin),
            "built_on": _built_on(settings),
        }

    return _edit(t, change)


def _settings_input(t, value, label: str, keywords: dict):
    """Rules, toggle and Coiled's ``scheduler_port`` (``_KEEP`` when not said) from what was typed:
    Coiled's format (see :func:`set_settings`), or Coiled's network keywords (``keywords``, or a
    mapping or ``key=value`` text naming them), which become the rules ``coiled.Cluster`` would
    build from them."""
    from . import network_args

    if keywords:
        if value is not None:
            given = ", ".join(keywords)
            raise IngressError(
                [f"{label} is given both as rules and as keywords ({given}); give one."]
            )
        value = keywords
    data = value
    if isinstance(value, str) and not network_args.is_keyword_form(value):
        data = load_text(value, label)
    if not network_args.is_keyword_form(data):
        rules, public_ip = parse_coiled_options(data, where=label)
        return rules, public_ip, _KEEP
    args, public_ip = network_args.parse(data, where=label)
    https = _model(t).dashboard_https
    return args.rules(use_dashboard_https=https), public_ip, args.scheduler_port


def _set_scheduler_port(t, port) -> None:
    """Keep (or drop, None) the scheduler port Coiled's keyword form said, for this cluster."""
    from . import ports

    if port is not _KEEP:
        here = ports.session_ports(t.cluster)
        ports.set_session(t.cluster, replace(here, scheduler_port=port))


def set_settings(
    value=None,
    *,
    cluster=None,
    label: str = "the settings",
    based_on: int | None = None,
    **keywords,
):
    """Set the session from a rule list, ``{ingress, use_scheduler_public_ip}`` or a ``coiled:``
    snippet as in Coiled's documentation, given as YAML/JSON text or Python values; or from Coiled's
    network keywords (``set_settings(allow_ingress_from="me", allow_ssh=True)``, a mapping, or
    ``allow_ingress_from=me allow_ssh=true`` text), which become exactly the rules
    ``coiled.Cluster`` builds from them. ``label`` names the input in error sentences (``the
    cell``). ``based_on``: the session version (a settings view's ``session_version``) the value
    was written from; a newer session refuses it."""
    t = _target(cluster)
    rules, public_ip, scheduler_port = _settings_input(t, value, label, keywords)
    parts: dict = {}
    if rules is not None:
        parts["ingress"] = rules
    if public_ip is not None:
        parts["use_scheduler_public_ip"] = public_ip
    before = _ports_session(t)
    _set_scheduler_port(t, scheduler_port)
    try:
        return _edit(t, lambda: parts, based_on=based_on)
    except BaseException:
        _restore_ports_session(t, before)
        raise


def _ports_session(t):
    from . import ports

    return ports.session_ports(t.cluster)


def _restore_ports_session(t, before) -> None:
    from . import ports

    ports.set_session(t.cluster, before)


def set_kind(kind, *, cluster=None):
    """Say which kind of cluster this is, for this session (``coiled`` or ``dask``; None forgets
    it): it decides the ports every verdict, warning and plan checks."""
    from . import ports

    word = None if kind is None else ports.parse_kind(kind)
    t = _target(cluster)
    here = ports.session_ports(t.cluster)
    ports.set_session(t.cluster, replace(here, kind=word))
    try:
        return _view(t, _settings(t))
    except BaseException:
        ports.set_session(t.cluster, here)
        raise


@contextlib.contextmanager
def kind_for(kind, cluster=None):
    """Set this session's kind of cluster (``--kind`` of a magic) for the command that follows;
    if that command fails, the kind is put back, so a refused command changes nothing. None: no-op."""
    from . import ports

    if kind is None:
        yield
        return
    word = ports.parse_kind(kind, where="--kind")
    t = _target(cluster)
    here = ports.session_ports(t.cluster)
    ports.set_session(t.cluster, replace(here, kind=word))
    try:
        yield
    except BaseException:
        ports.set_session(t.cluster, here)
        raise


def port_matrix(cluster=None, *, backend_options=None, **target_options):
    """For this cluster's kind: each port, what uses it, and whether the effective rules admit it
    and from where (settings work: no cloud call)."""
    from .provision.results import PortMatrix

    t = _target(cluster, **target_options)
    return PortMatrix(t, _settings(t, backend_options), _model(t))


def clear(cluster=None):
    """No rules at all: only the cluster's own internal traffic."""
    return _edit(_target(cluster), lambda: {"ingress": []})


def reset(cluster=None):
    """Drop this session's settings for the cluster (its kind too): back to the Dask config,
    account and built-in defaults."""
    from . import ports

    t = _target(cluster)
    ports.set_session(t.cluster, ports.SessionPorts())
    return _edit(t, lambda: {"ingress": None, "use_scheduler_public_ip": None})


def _one_of(value, words: tuple[str, ...], sentence: str) -> str:
    """``value`` as one of ``words`` (case and spaces ignored), or ``sentence`` with a did-you-mean;
    ``sentence`` has ``{value}`` and ``{hint}`` fields."""
    word = value.strip().lower() if isinstance(value, str) else value
    if word in words:
        return word
    close = difflib.get_close_matches(word, words, n=1) if isinstance(word, str) else []
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


def set_scheduler_ip(choice, *, cluster=None, based_on: int | None = None):
    """Connect clients on the scheduler's public or private IP, for this session (``based_on``:
    as for :func:`set_settings`)."""
    public_ip = parse_scheduler_ip(choice)
    return _edit(
        _target(cluster), lambda: {"use_scheduler_public_ip": public_ip}, based_on=based_on
    )


def subscribe(callback: Callable[[SessionChange], None]) -> Callable[[], None]:
    """Call ``callback(change)`` after every session change (``change.cluster``, ``.values``,
    ``.version``); returns the unsubscribe function."""
    return SESSION.subscribe(callback)


def use_default_cluster(cluster: str | None) -> None:
    """Act on ``cluster`` when an operation names none (``%config CoiledMagics.cluster``); None
    goes back to Dask's ``coiled-jupyter.cluster``. Its session toggle is the one mirrored into
    Dask's ``coiled.use_scheduler_public_ip``."""
    SESSION.use_default_cluster(cluster)


def name_session(detail: str) -> None:
    """Name whose session this is in every origin ("this Jupyter server" for the sidebar's)."""
    SESSION.detail = detail


def sandbox_running() -> bool:
    """Is the sandbox's server running now (a cold start takes seconds)? Starts nothing."""
    from .provision import sandbox

    return sandbox.running() is not None


def stop_sandbox() -> None:
    """Stop the sandbox's server, if this machine runs one."""
    from .provision import sandbox

    sandbox.stop()


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
    if t.cluster != default_cluster():
        notes = (
            f"saved from the session of cluster {t.cluster!r}: the {_SAVED_WHERE[word]} are read "
            "for every cluster, so they now apply to every cluster without session settings of "
            "its own.",
        )
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
            notes += (
                f"pinned {' and '.join(pinned)} as they are now; later changes there no longer "
                "reach this copy.",
            )
    else:
        values = SESSION.of(t.cluster)
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


def plan(
    cluster=None,
    *,
    backend_options=None,
    progress: Progress = None,
    override_guardrails: dict[str, str] | None = None,
    **target_options,
):
    """What :func:`apply` would change for this cluster (one read, no change).

    ``override_guardrails``: team guardrails the rules may break, by name, each with the reason
    (``{"no-world": "vendor debugging until 17:00"}``); the reason is tagged on those rules."""
    from .provision import reconcile

    t = _target(cluster, **target_options)
    settings = _read_settings(t, backend_options)
    planned = reconcile.plan(t, settings, progress=progress, overrides=override_guardrails)
    return replace(planned, settings=settings)


def apply(
    cluster=None,
    *,
    backend_options=None,
    progress: Progress = None,
    override_guardrails: dict[str, str] | None = None,
    **target_options,
):
    """Make the cluster's security group match the effective settings, as the cloud confirmed it
    (``override_guardrails`` as for :func:`plan`)."""
    from .provision import reconcile

    t = _target(cluster, **target_options)
    settings = _read_settings(t, backend_options)
    try:
        applied = reconcile.apply(t, settings, on_wait=progress, overrides=override_guardrails)
    finally:
        note_change()
    return replace(applied, settings=settings)


def set_and_apply(value, *, cluster=None, progress: Progress = None, label: str = "the settings"):
    """Set the session from ``value`` and apply, all or nothing: the rules are checked as they will
    be sent (``me`` resolved, quota) before the session changes, and a failed apply restores it."""
    from . import ports
    from .provision import reconcile

    t = _target(cluster)
    rules, public_ip, scheduler_port = _settings_input(t, value, label, {})
    ports_before = ports.session_ports(t.cluster)
    with SESSION.lock:  # no other edit between the change, the apply and a restore
        current = _settings(t)
        if rules is not None:
            prospective = replace(current, ingress=Resolved(rules, Layer.SESSION, SESSION.detail))
            reconcile.desired_rules(prospective)
        before = SESSION.of(t.cluster)
        _set_scheduler_port(t, scheduler_port)
        SESSION.replace(
            t.cluster,
            SessionValues(
                tuple(rules) if rules is not None else before.ingress,
                public_ip if public_ip is not None else before.use_scheduler_public_ip,
                None if rules is not None else before.built_on,
            ),
        )
        try:
            settings = _read_settings(t)
            return replace(reconcile.apply(t, settings, on_wait=progress), settings=settings)
        except BaseException:
            SESSION.replace(t.cluster, before)
            ports.set_session(t.cluster, ports_before)
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
    """What to hand to ``coiled.Cluster(**kwargs)``, and ``.security_group_id`` for other launchers:
    ``cluster``'s settings (its session settings, not another cluster's), the toggle included,
    which Dask's ``coiled.use_scheduler_public_ip`` holds only for the default cluster."""
    from .provision import reconcile

    t = _target(cluster, **target_options)
    return reconcile.cluster_kwargs(t, _read_settings(t, backend_options), backend_options)


def history(cluster=None, **target_options):
    """The applies of this cluster made from this machine, newest first, each with the rules the
    group held before it and what it changed (kept in the state folder; no cloud call)."""
    from .provision import history as kept
    from .provision.results import HistoryView

    t = _target(cluster, **target_options)
    return HistoryView(t, tuple(kept.entries(t)))


def undo(cluster=None, *, apply: bool = False, progress: Progress = None):
    """The way back to the group's rules before the last apply made from this machine: the plan
    (nothing changes), or with ``apply=True`` those rules set in this session and applied, all or
    nothing (that apply is recorded too, so a second undo goes back again)."""
    from .provision import history as kept
    from .provision import reconcile
    from .rules import to_coiled

    t = _target(cluster)
    entries = kept.entries(t)
    if not entries:
        raise CoiledJupyterError(
            f"no apply of cluster {t.cluster!r} is recorded on this machine, so there is nothing "
            "to undo; the history starts with the next apply."
        )
    last = entries[0]
    label = f"undo of the apply at {last.when}"
    if apply:
        return set_and_apply(
            to_coiled(last.before), cluster=cluster, progress=progress, label=label
        )
    settings = _read_settings(t)
    back = replace(settings, ingress=Resolved(list(last.before), Layer.SESSION, label))
    way_back = reconcile.plan(t, back, progress=progress)
    created = (
        " That apply created the group: undo leaves it without rules; destroy deletes it."
        if last.created
        else ""
    )
    note = (
        f"undo: back to the {len(last.before)} rule{'' if len(last.before) == 1 else 's'} the "
        f"group held before the apply at {last.when} ({'; '.join(last.changes)}); nothing "
        f"changes until undo is applied, which also sets these rules in this session.{created}"
    )
    return replace(
        way_back,
        notes=(note, *way_back.notes),
        commands=(("%coiled_ingress undo --apply", "apply this plan"),),
    )


# --------------------------------------------------------------------------------------------------
# Rehearsal: the group enforced with packets


def _rehearsal_ports(t, scheduler_port, dashboard_port) -> dict:
    """The ports to rehearse: as given, else those of the cluster's kind (``ports.model``)."""
    from . import ports

    model = ports.model(t.cluster)
    chosen = {
        "scheduler": model.scheduler if scheduler_port is None else scheduler_port,
        "dashboard": model.dashboard if dashboard_port is None else dashboard_port,
    }
    for name, value in chosen.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise IngressError(
                [f"the {name} port is a number from 1 to 65535, not {excerpt(value)}; e.g. 8786."]
            )
    return {"scheduler_port": chosen["scheduler"], "dashboard_port": chosen["dashboard"]}


def rehearse(
    cluster=None,
    *,
    live: bool = False,
    stop: bool = False,
    host: str | None = None,
    scheduler_port: int | None = None,
    dashboard_port: int | None = None,
    progress: Progress = None,
    **target_options,
):
    """Rehearse the cluster's group with packets, each predicted verdict beside a measured one.

    By default the group as the sandbox (or the cloud) holds it is enforced by nftables in front of a
    real ``distributed`` scheduler in network namespaces of this machine; where that cannot run, the
    result is one sentence saying why. ``live=True`` instead connects from this notebook to the
    cluster's real scheduler (``host``, default its address as ``use_scheduler_public_ip`` says);
    ``stop=True`` tears the rehearsal down. The ports default to those of the cluster's kind.
    """
    from .rehearsal import rehearse as rehearsal
    from .rehearsal.result import RehearsalResult

    t = _target(cluster, **target_options)
    if stop:
        stopped = rehearsal.stop()
        return RehearsalResult(
            t, "rehearsal stopped" if stopped else "no rehearsal was running in this process"
        )
    ports = _rehearsal_ports(t, scheduler_port, dashboard_port)
    if host is not None:
        host = _address(host, "host")
    if not live:
        from .rehearsal.namespaces import unavailable

        reason = unavailable()
        if reason:
            return RehearsalResult(t, reason)
    from .provision import reconcile
    from .reach import local_addresses, public_address

    settings = _read_settings(t)
    table = reconcile.describe(t, settings, progress=progress)
    if not table.exists:
        raise CoiledJupyterError(
            f"cluster {t.cluster!r} has no security group yet ({t.backend_label}), so there is "
            "nothing to rehearse; apply first (%coiled_ingress apply)."
        )
    if live:
        public_ip = settings.use_scheduler_public_ip.value
        if host is None:
            host = reconcile.scheduler_address(t, settings).ip
        public = public_address() if public_ip else None
        return rehearsal.live(
            t,
            table.rules,
            host=host,
            from_address=public if public_ip else _route_source(host),
            public=public,
            group_id=table.group_id,
            account_id=table.account_id,
            **ports,
        )
    return rehearsal.rehearse(
        table, local=local_addresses(), public=public_address(), progress=progress, **ports
    )


def _address(value, name: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise IngressError(
            [f"the {name} is an IP address, not {excerpt(value)}; e.g. 203.0.113.7."]
        ) from None


def _route_source(host: str) -> str | None:
    """The address this machine sends from to reach ``host`` (a routing lookup; nothing is sent)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return probe.getsockname()[0]
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------
# Exports for IT, and imports back

# An import is a rule list, not a data set: anything larger is refused before it is read whole.
IMPORT_MAX_BYTES = 1024 * 1024


def export_rules(format, *, cluster=None, to=None, **target_options):
    """The effective rules as they will be sent (``me`` resolved, compacted) in one of IT's formats:
    ``terraform``, ``coiled``, ``csv``, ``markdown`` or ``aws-cli``; written to the file ``to``
    when given. Reads the account store (one SSM call), as a plan does, so the team's defaults are
    what is exported when they decide the rules; nothing else is called."""
    from . import export
    from .provision.reconcile import declared
    from .provision.results import ExportResult

    format = export.check_format(format)
    path = _export_path(to) if to is not None else None
    t = _target(cluster, **target_options)
    settings = _read_settings(t)
    wanted = declared(settings)
    exported = export.export(
        wanted.rules,
        format,
        cluster=t.cluster,
        region=t.region,
        origin=settings.ingress.origin,
        purpose=_purpose_of(_model(t)),
    )
    if path is not None:
        from .state import write_atomically

        write_atomically(path, exported.text)
    return ExportResult(
        t,
        format,
        exported.text,
        len(wanted.rules),
        settings.ingress.origin,
        str(path) if path is not None else None,
        exported.lost,
        wanted.notes,
    )


def _purpose_of(model) -> Callable[[Rule], str]:
    """What the ports of a rule are for on a cluster of ``model``'s kind ('' for ports it does not
    use), from the one table of ports (:mod:`.ports`)."""
    uses = [use for use in model.uses() if use.port is not None]

    def purpose(rule: Rule) -> str:
        return ", ".join(u.use for u in uses if rule.from_port <= u.port <= rule.to_port)

    return purpose


def _export_path(to):
    from pathlib import Path

    if not isinstance(to, str) or not to.strip():
        raise CoiledJupyterError(f"the export file {excerpt(to)} is not a file name; name one.")
    path = Path(to).expanduser()
    if path.is_dir():
        raise CoiledJupyterError(f"{excerpt(to)} is a folder; name a file to export to.")
    if not path.parent.is_dir():
        raise CoiledJupyterError(
            f"the folder of {excerpt(to)} does not exist; create it or name another file."
        )
    return path


def import_rules(format, text=None, *, path=None, cluster=None):
    """Set the session's rules from an export (``text``, or the file ``path``) in ``format``;
    ``terraform``, ``coiled``, ``csv``, ``markdown`` and ``aws-cli`` read back what
    :func:`export_rules` wrote. Like ``set``, nothing is applied until a plan and an apply."""
    from . import export

    format = export.check_format(format, importing=True)
    if (text is None) == (path is None):
        raise CoiledJupyterError("import takes the export's text or a file path, one of the two.")
    where = "the import" if path is None else f"the file {excerpt(str(path))}"
    if path is not None:
        text = _read_import(path, where)
    rules = export.import_rules(text, format, where=where)
    return _edit(_target(cluster), lambda: {"ingress": rules})


def _read_import(path, where: str) -> str:
    """The file's text, read with a bound and only when it is a regular file (a FIFO or a device
    would block or never end)."""
    import os
    import stat

    try:
        fd = os.open(os.path.expanduser(str(path)), os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise CoiledJupyterError(f"{where} cannot be read: {error.strerror}.") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CoiledJupyterError(f"{where} is not a regular file.")
        data = os.read(fd, IMPORT_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > IMPORT_MAX_BYTES:
        raise CoiledJupyterError(
            f"{where} is larger than {IMPORT_MAX_BYTES // 1024} KiB, more than any rule list."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CoiledJupyterError(f"{where} is not UTF-8 text.") from None


# --------------------------------------------------------------------------------------------------
# Team guardrails (kept with the account defaults)


def guardrails(**target_options):
    """The team's guardrails as the account store holds them (one SSM read)."""
    from .provision.account import guardrails as read
    from .provision.results import GuardrailsView

    t = _target(**target_options)
    return GuardrailsView(t, read(t).rails)


def set_guardrails(*, no_world=None, within=None, widest=None, max_rules=None, **target_options):
    """Set team guardrails for everyone who reads the account store (``None`` leaves one as it
    is): ``no_world="8786,8787"`` (never open to 0.0.0.0/0 or ::/0), ``within=["10.0.0.0/8"]``
    (sources only inside these networks), ``widest=16`` or ``(16, 48)`` (no network wider than
    /16, /48 for IPv6), ``max_rules=40``. Each new or changed one is signed with who set it
    (the AWS identity of this kernel) and when. All are checked before anything is written."""
    from .policy import parse_guardrail
    from .provision.account import set_guardrails as store
    from .provision.results import GuardrailsView

    given = {"no-world": no_world, "within": within, "widest": widest, "max-rules": max_rules}
    rails, problems = [], []
    for name, value in given.items():
        if value is not None:
            try:
                rails.append(parse_guardrail(name, value))
            except IngressError as error:
                problems.extend(error.problems)
    if problems:
        raise IngressError(problems)
    if not rails:
        raise IngressError(
            ["set_guardrails needs at least one of no_world, within, widest and max_rules."]
        )

    def change(current):
        for rail in rails:
            current = current.replaced(rail)
        return current

    t = _target(**target_options)
    return GuardrailsView(t, store(t, change).rails)


def clear_guardrail(name, **target_options):
    """Remove one team guardrail (``all`` removes every one)."""
    from .policy import Guardrails
    from .provision.account import set_guardrails as store
    from .provision.results import GuardrailsView

    word = _one_of(
        name,
        (*GUARDRAIL_NAMES, "all"),
        "there is no guardrail {value}; {hint}the guardrails are "
        + ", ".join(GUARDRAIL_NAMES)
        + ", or all.",
    )
    t = _target(**target_options)
    stored = store(t, lambda rails: Guardrails() if word == "all" else rails.without(word))
    return GuardrailsView(t, stored.rails)
