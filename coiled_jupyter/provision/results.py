"""Result objects of every operation, each carrying its own JSON payload.

Every front end gets these objects back: the magics return them (so ``t = %coiled_ingress describe``
keeps one), the panel shows them, the REST handlers send ``to_payload()``. The payload is the one source
of every rendering: :mod:`coiled_jupyter.display` turns it into text/plain and text/html, and the lab's
MIME renderer reads it as ``application/vnd.coiled-jupyter.rules+json``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace

from ..cell import ingress_cell
from ..rules import ME, Rule, to_coiled
from ..settings import (
    Layer,
    Settings,
    account_drift_note,
    replaced_rules_note,
    unread_account_note,
)
from .target import Target

SCHEMA_VERSION = 1
# The one sandbox marker: the same words in every table, panel and sidebar (each draws it as a pill).
SANDBOX_MARKER = "local sandbox: not AWS"


class _Displayed:
    """Rich display for every result: text/plain, text/html and the rules JSON mimetype."""

    def to_payload(self) -> dict:
        raise NotImplementedError

    def _payload(self, kind: str, **fields) -> dict:
        """The payload's common header (what the table describes, and the kind of cluster and ports
        it assumed) with this result's ``fields``."""
        model = getattr(self, "ports", None)
        return _header(
            self.target,
            kind,
            getattr(self, "account_id", ""),
            ports=model.to_dict() if model is not None else None,
            **fields,
        )

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ..display import mimebundle

        return mimebundle(self.to_payload())

    def __repr__(self) -> str:
        from ..display import text

        return text(self.to_payload())


def rule_row(rule: Rule, **extra) -> dict:
    return {
        "protocol": rule.protocol,
        "ports": rule.ports,
        "source": rule.source,
        "description": rule.description,
        **extra,
    }


def _rule_keys(rules) -> tuple:
    """Rules as compared for "the same rules": descriptions count, order does not."""
    return tuple(sorted((rule.key, rule.description) for rule in rules))


def _layer_says(layer: dict) -> str:
    """What one layer sets, and how it is known: "sets nothing (read at 03:41:07 UTC)", or only the
    note for a layer that was not read (it may set values where it is kept)."""
    sets = "; ".join(layer["sets"]) or ("sets nothing" if layer.get("read", True) else "")
    note = layer.get("note")
    if not note:
        return sets
    return f"{sets} ({note})" if sets else note


def command_rows(commands, t: Target) -> list[dict]:
    """Suggested magics as the payload carries them, each naming ``t``'s cluster, so that it works
    when pasted whichever cluster the magics default to: ``{"command": ..., "does": ...}``."""
    cluster = f" --cluster {shlex.quote(t.cluster)}"
    return [{"command": command + cluster, "does": does} for command, does in commands]


def _count(rules) -> str:
    return f"{len(rules)} rule{'' if len(rules) == 1 else 's'}"


def _header(t: Target, kind: str, account_id: str, **extra) -> dict:
    return {
        "version": SCHEMA_VERSION,
        "kind": kind,
        "backend": t.backend,
        "backend_label": t.backend_label,
        "backend_marker": SANDBOX_MARKER if t.backend == "sandbox" else "",
        "region": t.region,
        "cluster": t.cluster,
        "vpc_id": t.vpc_id,
        "account_id": account_id,
        "rows": [],
        "notes": [],
        "warnings": [],
        **extra,
    }


@dataclass(frozen=True, repr=False)
class RuleTable(_Displayed):
    """The group's inbound rules as the cloud reports them, each with its origin."""

    target: Target
    account_id: str
    group_id: str | None
    group_name: str | None
    vpc_id: str | None
    rules: tuple[Rule, ...]
    origins: tuple[str, ...]
    unmanageable: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    ports: object = None  # the PortModel the table assumed (coiled_jupyter.ports)

    @property
    def exists(self) -> bool:
        return self.group_id is not None

    def to_payload(self) -> dict:
        return self._payload(
            "rules",
            vpc_id=self.vpc_id or self.target.vpc_id,
            group_id=self.group_id,
            group_name=self.group_name,
            rows=[rule_row(r, origin=o) for r, o in zip(self.rules, self.origins)],
            notes=[f"not managed: {u}" for u in self.unmanageable],
            warnings=list(self.warnings),
        )


@dataclass(frozen=True, repr=False)
class Plan(_Displayed):
    """What an apply would do: create the group, add, remove, update (descriptions) and keep rules.

    ``add_later`` is the part of ``add`` that goes after the removal, when the group cannot hold the
    old and the new rules at once (the plan's notes say that access narrows for that moment);
    ``remove_origins`` says who wrote each rule of ``remove``; ``previous`` holds the descriptions
    the rules of ``update`` have in the group; ``me`` the networks 'me' stands for.
    """

    target: Target
    account_id: str
    group_id: str | None
    add: tuple[Rule, ...]
    remove: tuple[Rule, ...]
    keep: tuple[Rule, ...]
    origin: str
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    update: tuple[Rule, ...] = ()
    previous: tuple[str, ...] = ()
    add_later: tuple[Rule, ...] = ()
    remove_origins: tuple[str, ...] = ()
    me: tuple[str, ...] = ()
    settings: Settings | None = field(default=None, compare=False)  # what was planned
    ports: object = None  # the PortModel the plan assumed (coiled_jupyter.ports)
    # What to run next, as (command, what it does); each works when pasted (see command_rows).
    commands: tuple[tuple[str, str], ...] = ()

    @property
    def create(self) -> bool:
        return self.group_id is None

    @property
    def changes(self) -> bool:
        return self.create or bool(self.add or self.remove or self.update)

    @property
    def steps(self) -> list[dict]:
        """The calls in the order apply makes them, with the number of rules each."""
        first = len(self.add) - len(self.add_later)
        steps = [
            ("create", 1 if self.create else 0),
            ("add", first),
            ("remove", len(self.remove)),
            ("add", len(self.add_later)),
            ("update", len(self.update)),
        ]
        return [{"action": action, "rules": n} for action, n in steps if n]

    @property
    def summary(self) -> str:
        if not self.changes:
            return "no change"
        update = f"update {len(self.update)}, " if self.update else ""
        return (
            f"{'create group, ' if self.create else ''}add {len(self.add)}, "
            f"remove {len(self.remove)}, {update}keep {len(self.keep)}"
        )

    def to_payload(self) -> dict:
        rows = (
            [rule_row(r, action="add") for r in self.add]
            + [
                rule_row(r, action="remove", origin=o)
                for r, o in zip(self.remove, self.remove_origins or ("",) * len(self.remove))
            ]
            + [
                rule_row(r, action="update", previous_description=p)
                for r, p in zip(self.update, self.previous)
            ]
            + [rule_row(r, action="keep") for r in self.keep]
        )
        return self._payload(
            "plan",
            group_id=self.group_id,
            summary=self.summary,
            changes=self.changes,
            origin=self.origin,
            steps=self.steps,
            rows=rows,
            notes=list(self.notes),
            warnings=list(self.warnings),
            commands=command_rows(self.commands, self.target),
        )


@dataclass(frozen=True, repr=False)
class ApplyResult(_Displayed):
    """The plan that was carried out and the group's rules afterwards, as the cloud confirmed them."""

    plan: Plan
    table: RuleTable
    settings: Settings | None = field(default=None, compare=False)  # what was applied

    @property
    def changed(self) -> bool:
        return self.plan.changes

    def to_payload(self) -> dict:
        return {
            **self.table.to_payload(),
            "kind": "apply",
            "changed": self.changed,
            "summary": "applied: " + self.plan.summary
            if self.changed
            else "no change: the group already matches the settings",
            "plan": self.plan.to_payload(),
        }


@dataclass(frozen=True, repr=False)
class DestroyResult(_Displayed):
    target: Target
    group_id: str | None
    deleted: bool
    account_id: str = ""

    def to_payload(self) -> dict:
        summary = (
            f"deleted group {self.group_id}"
            if self.deleted
            else f"cluster {self.target.cluster!r} has no group to delete"
        )
        return self._payload(
            "destroy",
            group_id=self.group_id,
            deleted=self.deleted,
            summary=summary,
        )


@dataclass(frozen=True, repr=False)
class SchedulerAddress(_Displayed):
    """The address a client should connect to, by ``use_scheduler_public_ip``."""

    target: Target
    instance_id: str
    ip: str
    public: bool
    port: int
    account_id: str = ""

    @property
    def address(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"tls://{host}:{self.port}"

    def __str__(self) -> str:
        return self.address

    def to_payload(self) -> dict:
        kind = "public" if self.public else "private"
        return self._payload(
            "scheduler",
            instance_id=self.instance_id,
            ip=self.ip,
            address=self.address,
            summary=f"scheduler {self.instance_id}: connect to {self.address} ({kind} IP)",
        )


@dataclass(frozen=True, repr=False)
class SettingsView(_Displayed):
    """The effective settings with their origins, and whether this notebook can reach the cluster.

    ``coiled_toggle`` is the ``use_scheduler_public_ip`` that a ``coiled.Cluster()`` created now in
    this kernel reads from Dask's config by itself (None: not known); the note says what Coiled's
    client takes by itself and what it takes only through ``cluster_kwargs()``.

    Session settings are per cluster: ``session_clusters`` names every cluster that has some (the
    view says so, since only the target's are shown), ``default_cluster`` the cluster whose toggle
    Dask's config mirrors, ``session_version`` the version of the target's session settings the view
    shows (an edit made from it names it, see ``session.set_settings``).
    """

    target: Target
    settings: Settings
    reachability: object = None
    coiled_toggle: bool | None = None
    ports: object = None  # the PortModel the verdicts assumed (coiled_jupyter.ports)
    session_clusters: tuple[str, ...] = ()
    default_cluster: str | None = None
    session_version: int = 0

    @property
    def unsaved(self) -> bool:
        """Does the session set a value that neither the Dask config nor the account defaults hold?"""
        mine = self.settings.layer(Layer.SESSION)
        if mine is None:
            return False
        kept = [v for layer in (Layer.CONFIG, Layer.ACCOUNT) if (v := self.settings.layer(layer))]
        if mine.ingress is not None and all(
            k.ingress is None or _rule_keys(k.ingress) != _rule_keys(mine.ingress) for k in kept
        ):
            return True
        return mine.use_scheduler_public_ip is not None and all(
            k.use_scheduler_public_ip != mine.use_scheduler_public_ip for k in kept
        )

    verbose: bool = False

    def expanded(self) -> SettingsView:
        """This view with its details shown (``%coiled_ingress -v``): every layer, note and reason."""
        return replace(self, verbose=True)

    def to_payload(self) -> dict:
        settings = self.settings
        layers = []
        for values in settings.layers:
            sets = []
            if values.ingress is not None:
                detail = f", {values.ingress_detail}" if values.ingress_detail else ""
                sets.append(f"ingress ({_count(values.ingress)}{detail})")
            if values.use_scheduler_public_ip is not None:
                detail = f" ({values.public_ip_detail})" if values.public_ip_detail else ""
                sets.append(
                    f"use_scheduler_public_ip: {str(values.use_scheduler_public_ip).lower()}{detail}"
                )
            layers.append(
                {
                    "layer": values.layer.label,
                    "sets": sets,
                    "read": values.read,
                    "note": values.note,
                }
            )
        reach = self.reachability
        public_ip = settings.use_scheduler_public_ip
        notes, client_notes = self.notes, self._coiled_notes()
        return self._payload(
            "settings",
            ingress_origin=settings.ingress.origin,
            use_scheduler_public_ip=public_ip.value,
            use_scheduler_public_ip_origin=public_ip.origin,
            rows=[rule_row(r) for r in settings.rules],
            # The rules in Coiled's format, as a panel edits them.
            ingress=to_coiled(settings.rules),
            layers=layers,
            reachability=reach.to_dict() if reach is not None else None,
            notes=notes,
            client_notes=client_notes,
            session_clusters=list(self.session_clusters),
            session_version=self.session_version,
            unsaved=self.unsaved,
            warnings=list(reach.warnings) if reach is not None else [],
            copy_as_cell=ingress_cell(self.target.cluster, settings.rules, public_ip.value),
            verdict=self._verdict(),
            commands=self._commands(),
            details=[
                *self._reasons(),
                *(f"layer {layer['layer']}: {_layer_says(layer)}" for layer in layers),
                *(f"note: {note}" for note in [*notes, *client_notes]),
            ],
            verbose=self.verbose,
        )

    def _verdict(self) -> str:
        """One line: can this notebook reach the scheduler and the dashboard (the reasons are among
        the details)."""
        if self.reachability is None:
            return ""
        scheduler, dashboard = self.reachability.ports
        return (
            f"can this notebook reach the scheduler (port {scheduler.port})? {scheduler.verdict}; "
            f"the dashboard (port {dashboard.port})? {dashboard.verdict}"
        )

    def _reasons(self) -> list[str]:
        public_ip = self.settings.use_scheduler_public_ip.value
        where = "public" if public_ip else "private"
        lines = [
            f"use_scheduler_public_ip: {str(public_ip).lower()}: the client connects on the "
            f"scheduler's {where} IP."
        ]
        if self.reachability is not None:
            lines += [
                f"{port.name} (port {port.port}): {port.verdict}: {port.reason}"
                for port in self.reachability.ports
            ]
        return lines

    def _commands(self) -> list[dict]:
        """The fixes the warnings and notes speak of, each a line that works when pasted into a
        cell, for this view's cluster whichever cluster the magics default to."""
        found = list(getattr(self.reachability, "commands", ()))
        if account_drift_note(self.settings):
            found.append(("%coiled_ingress reset", "take the team's rules as they are now"))
        return command_rows(found, self.target)

    @property
    def notes(self) -> list[str]:
        """What the person may not expect, before anything is applied: the layers the rules replace,
        what an account layer that was not read may change, and the address ``me`` stands for now
        (it is looked up again at apply)."""
        notes = [
            note
            for note in (
                replaced_rules_note(self.settings),
                account_drift_note(self.settings),
                unread_account_note(self.settings),
            )
            if note
        ]
        lookup = getattr(self.reachability, "lookup", None)
        if lookup is not None and any(r.source == ME for r in self.settings.rules):
            notes.append(
                f"me is {lookup.describe()}; it is looked up again when the rules are sent."
            )
        link = self._dashboard_link_note()
        if link:
            notes.append(link)
        return notes

    def _dashboard_link_note(self) -> str | None:
        """What Coiled's client does with the dashboard link when clients connect on the private IP
        (coiled/v2/core.py: ``use_scheduler_public_ip`` false and no HTTPS dashboard set
        ``use_dashboard_public_ip`` false)."""
        model = self.ports
        if model is None or model.kind != "coiled" or self.settings.use_scheduler_public_ip.value:
            return None
        if model.dashboard_https:
            return (
                "with use_scheduler_public_ip: false, Coiled's client still links the HTTPS "
                f"dashboard (port {model.dashboard}) on the scheduler's public address, since "
                "coiled.use_dashboard_https is true; only the client's connection uses the private IP."
            )
        return (
            "with use_scheduler_public_ip: false and coiled.use_dashboard_https: false, Coiled's "
            "client also sets use_dashboard_public_ip: false, so the dashboard link is the "
            f"scheduler's private address (http, port {model.dashboard}), which opens only inside "
            "the VPC or over a VPN."
        )

    def _coiled_notes(self) -> list[str]:
        if self.coiled_toggle is None:
            return []
        public_ip = self.settings.use_scheduler_public_ip
        toggle = (
            f"coiled.Cluster() created in this kernel reads use_scheduler_public_ip from Dask's "
            f"config by itself: {str(self.coiled_toggle).lower()}"
        )
        cluster = self.target.cluster
        kwargs = (
            "cluster_kwargs()"
            if cluster == self.default_cluster
            else f"cluster_kwargs({cluster!r})"
        )
        if self.coiled_toggle != public_ip.value:
            mirrored = (
                f" (it holds the default cluster {self.default_cluster!r}'s toggle only)"
                if public_ip.layer == Layer.SESSION and cluster != self.default_cluster
                else ""
            )
            toggle += (
                f"{mirrored}, not the {str(public_ip.value).lower()} above (from "
                f"{public_ip.origin}), so pass it as coiled.Cluster(**coiled_jupyter.{kwargs})"
            )
        return [
            toggle + ".",
            f"coiled.Cluster() takes the rules only as coiled.Cluster(**coiled_jupyter.{kwargs}); "
            "it never reads them from Dask's config.",
        ]


@dataclass(frozen=True, repr=False)
class PortMatrix(_Displayed):
    """For IT: each port the cluster's kind listens on, what uses it, and whether the effective rules
    admit it and from where (``%coiled_ingress ports``)."""

    target: Target
    settings: Settings
    ports: object  # the PortModel (coiled_jupyter.ports)

    def to_payload(self) -> dict:
        rows = []
        for use in self.ports.uses():
            if use.port is None:
                admitted, sources = "yes", "the cluster's own group (added by apply)"
            else:
                found = [
                    r.source
                    for r in self.settings.rules
                    if r.protocol in ("tcp", "all") and r.from_port <= use.port <= r.to_port
                ]
                admitted = "yes" if found else "no"
                sources = ", ".join(dict.fromkeys(found))
            rows.append(
                {
                    "ports": use.ports,
                    "use": use.use,
                    "needed": "yes" if use.needed else "",
                    "admitted": admitted,
                    "from": sources,
                }
            )
        return self._payload(
            "ports",
            summary=f"the ports of a {self.ports.name}, and what the rules from "
            f"{self.settings.ingress.origin} admit",
            rows=rows,
        )


@dataclass(frozen=True, repr=False)
class HistoryView(_Displayed):
    """The applies of one cluster made from this machine, newest first (``provision.history``)."""

    target: Target
    entries: tuple = ()

    def to_payload(self) -> dict:
        count = len(self.entries)
        rows = [
            {
                "at": entry.when,
                "changes": "; ".join(entry.changes) or "no change",
                "before": "; ".join(str(r) for r in entry.before) or "no rules",
            }
            for entry in self.entries
        ]
        summary = (
            f"{count} appl{'y' if count == 1 else 'ies'} recorded on this machine, newest first; "
            "Before is what the group held before each"
            if count
            else "no apply of this cluster is recorded on this machine"
        )
        commands = (
            [("%coiled_ingress undo", "plan the way back to before the newest apply")]
            if count
            else []
        )
        return self._payload(
            "history",
            group_id=self.entries[0].group_id if count else None,
            summary=summary,
            rows=rows,
            commands=command_rows(commands, self.target),
        )


@dataclass(frozen=True, repr=False)
class SaveResult(_Displayed):
    """What was kept and where: the Dask config file, or the account store.

    ``ingress`` and ``use_scheduler_public_ip`` are the values written; ``None`` was not written.
    """

    target: Target
    scope: str
    location: str
    ingress: tuple[Rule, ...] | None
    use_scheduler_public_ip: bool | None
    notes: tuple[str, ...] = ()

    def to_payload(self) -> dict:
        written = []
        if self.ingress is not None:
            written.append(f"ingress ({_count(self.ingress)})")
        if self.use_scheduler_public_ip is not None:
            written.append(f"use_scheduler_public_ip: {str(self.use_scheduler_public_ip).lower()}")
        readers = (
            "new kernels read them from this file"
            if self.scope == "user"
            else "every kernel of this workspace reads them unless its Dask config, session or "
            "cluster options say otherwise"
        )
        coiled = []  # what Coiled's client does with them, by itself or not
        if self.use_scheduler_public_ip is not None:
            coiled.append(
                "coiled.Cluster() reads use_scheduler_public_ip from this file"
                if self.scope == "user"
                else "coiled.Cluster() does not read use_scheduler_public_ip from here"
            )
        if self.ingress is not None:
            coiled.append(
                "coiled.Cluster() takes the rules only as coiled.Cluster(**cluster_kwargs())"
            )
        return self._payload(
            "save",
            scope=self.scope,
            location=self.location,
            summary=f"saved to {self.location}: {' and '.join(written)}; "
            f"{'; '.join([readers, *coiled])}.",
            rows=[rule_row(r) for r in self.ingress or ()],
            notes=list(self.notes),
        )


@dataclass(frozen=True, repr=False)
class ExportResult(_Displayed):
    """The effective rules in one of IT's formats (:mod:`coiled_jupyter.export`): ``text`` to copy,
    where it was written (``path``, or None), and what the format could not carry."""

    target: Target
    format: str
    text: str
    rule_count: int
    origin: str
    path: str | None = None
    lost: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.text

    def to_payload(self) -> dict:
        written = f"; written to {self.path}" if self.path else ""
        return self._payload(
            "export",
            format=self.format,
            summary=f"{self.rule_count} rule{'' if self.rule_count == 1 else 's'} from "
            f"{self.origin} as {self.format}{written}",
            body=self.text,
            path=self.path,
            notes=list(self.notes),
            warnings=list(self.lost),
        )


@dataclass(frozen=True, repr=False)
class GuardrailsView(_Displayed):
    """The team's guardrails: every plan and apply of everyone who reads the account store checks
    them before any write."""

    target: Target
    rails: tuple = ()

    def to_payload(self) -> dict:
        return self._payload(
            "guardrails",
            summary=(
                f"{len(self.rails)} team guardrail{'' if len(self.rails) == 1 else 's'}, checked "
                "by every plan and apply before any write"
                if self.rails
                else "no team guardrails: set one with %coiled_ingress guard no-world 8786"
            ),
            rows=[
                {
                    "guardrail": rail.name,
                    "rule": rail.describe(),
                    "set_by": rail.set_by,
                    "set_at": rail.set_at,
                }
                for rail in self.rails
            ],
        )


class ClusterKwargs(dict):
    """Keyword arguments for ``coiled.Cluster(**kwargs)``: ``backend_options`` (its ``ingress`` in
    Coiled's exact schema) and ``use_scheduler_public_ip``.

    ``.security_group_id`` is the cluster's group for other launchers, e.g. dask-cloudprovider's
    ``security_groups=``; it is None when there is no group yet and under the sandbox, whose group
    (a moto group no real launcher can use) is ``.sandbox_group_id``. ``.notes`` says why.
    """

    def __init__(
        self,
        kwargs: dict,
        security_group_id: str | None,
        *,
        sandbox_group_id: str | None = None,
        notes: tuple[str, ...] = (),
    ):
        super().__init__(kwargs)
        self.security_group_id = security_group_id
        self.sandbox_group_id = sandbox_group_id
        self.notes = notes

    @property
    def security_groups(self) -> list[str]:
        return [self.security_group_id] if self.security_group_id else []
