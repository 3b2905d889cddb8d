"""The firewall panel: an ipywidgets form over the notebook session (``%coiled_firewall``).

A front end only, like the magics: every edit and every button is one call to :mod:`.session`
(``set_settings``, ``set_scheduler_ip``, ``reset``, ``plan``, ``apply``, ``save``), every field is
checked with ``session.check_rule``, and the result area shows the core's own result object, so the
panel shows the same tables (the same HTML and JSON mimetype) as the magics and holds no rule logic.

Drafts, not keystrokes: the rows are a draft. A field reaches the session only when the person
commits it: Enter or leaving the field (the text fields have ``continuous_update=False``, so the
browser sends nothing while a person types), a choice in a dropdown, Add, Remove, or Plan/Apply
(clicking them leaves the field first). Only then, and only if every row is valid, are the rows sent
with ``session.set_settings`` (the toggle with ``session.set_scheduler_ip``), as written: no prefix of
what is being typed ever becomes a rule. A committed row that is invalid is not sent: the session keeps
the last valid rules, Apply and Save are disabled, Plan and Apply refuse with the row's sentence, and
the sentence is shown beside the row. A row whose ports and source are both empty is a row still being
filled in and is left out.

Edits are sent from a thread of the panel (each one re-judges reachability, which may wait on the
public-address lookup), only the newest waiting one of each kind, and an operation waits for them
before it starts. Each edit names the session version the rows were made from: if the session changed
meanwhile (a magic in the next cell while the edit waited in the thread), the session refuses it, and
the panel reloads its rows from the session and says so, instead of undoing the newer change.

One state with the magics: the panel subscribes to the session, so a change made by a magic (or by
another panel) for its cluster shows at once in an open panel (rows still invalid stay, below, and
are still not in the session); :meth:`FirewallPanel.close` unsubscribes. Session settings are per
cluster: the panel edits only the cluster it was opened for, and its header names the other clusters
that have session settings.

Long operations (Plan, Apply, Save as team default, and the sandbox's cold start before them) run in
a background thread by default, so the kernel stays free; the buttons are disabled and a status line
says what is happening. A failure is shown as its one sentence in the panel, never only in a log.

Saved notebooks: widget state is a snapshot, not a source of truth, so the panel offers the
equivalent ``%%coiled_ingress`` cell (the settings payload's ``copy_as_cell``, the same text the
sidebar and the lab's palette give; it sets the settings and does not apply), and each Apply also
updates a plain output below the panel (a display id) with the applied table, which nbconvert and
GitHub show without widget JavaScript.

Colours come only from JupyterLab's ``--jp-*`` variables; all text from outside is escaped.
"""

from __future__ import annotations

import contextvars
import html
import threading
import traceback
from collections.abc import Callable

import ipywidgets as widgets

from . import session
from .display import sandbox_pill
from .errors import CoiledJupyterError, StaleEdit

PORTS = "ports"
SOURCE = "source (CIDR, address, me, everyone)"
PROTOCOL = "protocol"
DESCRIPTION = "description"
REMOVE = "Remove"
ADD = "Add rule"
SCHEDULER_IP = "scheduler IP"
KIND = "cluster kind"
PLAN = "Plan"
APPLY = "Apply"
SAVE_USER = "Save to my config"
SAVE_ACCOUNT = "Save as team default"
REVERT = "Revert"
REHEARSE = "Rehearse"
CELL = "Copy as %%coiled_ingress cell"

_MEANING = {
    True: "public: clients connect to the scheduler's public IP, so the rules must admit this "
    "notebook's public address.",
    False: "private: clients connect to the scheduler's private IP (same VPC, VPN or peering), so "
    "the rules must admit this notebook's private address.",
}
# Column widths shared by the headings and every row; a row wraps below ~500 px.
_COLUMNS = {
    "ports": {"flex": "0 1 100px", "min_width": "70px"},
    "source": {"flex": "1 1 170px", "min_width": "120px"},
    "protocol": {"flex": "0 0 68px"},
    "description": {"flex": "1 1 130px", "min_width": "90px"},
    "remove": {"flex": "0 0 76px"},
}
_ERROR = "var(--jp-error-color1)"
_WARN = "var(--jp-warn-color1)"
_MUTED = "var(--jp-ui-font-color2)"


def _column(name: str) -> widgets.Layout:
    return widgets.Layout(width="auto", **_COLUMNS[name])


def _block(inner: str) -> str:
    """HTML widget content with normal line spacing (widgets use one control's height per line)."""
    return f'<div style="line-height: 1.45">{inner}</div>'


def _span(text: str, color: str | None = None) -> str:
    style = f' style="color: {color}"' if color else ""
    return f"<span{style}>{html.escape(text)}</span>"


def _rule_snapshot(rules) -> tuple:
    """The rules as compared for the markers: descriptions count, order does not."""
    return tuple(sorted((rule.key, rule.description) for rule in rules))


# --------------------------------------------------------------------------------------------------
# One rule row


class RuleRow:
    """One editable rule: ports, source, protocol and description, a remove button, its sentences."""

    def __init__(self, item: dict | None, on_change: Callable[[], None], on_remove):
        item = item or {}
        ports = item.get("ports", [])
        # continuous_update=False: the value reaches the kernel on Enter or on leaving the field,
        # never key by key, so a prefix of what is being typed is never a rule.
        self.ports = widgets.Text(
            ",".join(str(p) for p in ports),
            continuous_update=False,
            placeholder=PORTS,
            tooltip="ports: 8786, 8786,8787 or a range 8000-8100",
            layout=_column("ports"),
        )
        self.source = widgets.Text(
            str(item.get("cidr", "")),
            continuous_update=False,
            placeholder=SOURCE,
            tooltip="source: a network 10.1.0.0/16, one address, me, everyone or sg-...",
            layout=_column("source"),
        )
        self.protocol = widgets.Dropdown(
            options=list(session.PROTOCOLS),
            value=item.get("protocol", "tcp"),
            tooltip=PROTOCOL,
            layout=_column("protocol"),
        )
        self.description = widgets.Text(
            str(item.get("description", "")),
            continuous_update=False,
            placeholder=DESCRIPTION,
            tooltip="description (optional, shown in the AWS console)",
            layout=_column("description"),
        )
        self.remove = widgets.Button(
            description=REMOVE,
            tooltip="Remove this rule",
            layout=_column("remove"),
        )
        self.message = widgets.HTML(layout=widgets.Layout(margin="0 0 2px 4px"))
        self.fields = {"ports": self.ports, "source": self.source, "description": self.description}
        line = widgets.HBox(
            [self.ports, self.source, self.protocol, self.description, self.remove], layout=_wrap()
        )
        self.box = widgets.VBox([line, self.message], layout=widgets.Layout(width="100%"))
        for control in (self.ports, self.source, self.protocol, self.description):
            control.observe(lambda _change: on_change(), "value")
        self.remove.on_click(lambda _button: on_remove(self))
        self.problems: list[str] = []

    @property
    def blank(self) -> bool:
        """A row still being filled in: neither ports nor source typed yet."""
        return not self.ports.value.strip() and not self.source.value.strip()

    def item(self) -> dict:
        """The row in Coiled's format, for ``session.set_settings``."""
        item = {
            "ports": self.ports.value.split(","),
            "cidr": self.source.value,
            "protocol": self.protocol.value,
        }
        if self.description.value:
            item["description"] = self.description.value
        return item

    def check(self) -> bool:
        """Ask the core about each field; mark the bad ones and show their sentences."""
        if self.blank:
            found = {name: [] for name in self.fields}
            whole: list[str] = []
        else:
            # One field at a time, the others held at values the core accepts, so that each
            # sentence is shown beside the field it is about.
            found = {
                "ports": session.check_rule(self.ports.value, "everyone"),
                "source": session.check_rule("8786", self.source.value),
                "description": session.check_rule(
                    "8786", "everyone", description=self.description.value
                ),
            }
            whole = session.check_rule(
                self.ports.value,
                self.source.value,
                protocol=self.protocol.value,
                description=self.description.value,
            )
        problems = [p for sentences in found.values() for p in sentences]
        problems += [p for p in whole if p not in problems]
        for name, control in self.fields.items():
            control.layout.border = f"2px solid {_ERROR}" if found[name] else ""
        self.message.value = (
            _block("<br>".join(_span(p, _ERROR) for p in problems)) if problems else ""
        )
        self.message.layout.display = "" if problems else "none"
        self.problems = problems
        return not problems

    def controls(self) -> list[widgets.Widget]:
        return [self.ports, self.source, self.protocol, self.description, self.remove]


# --------------------------------------------------------------------------------------------------
# The panel


class FirewallPanel(widgets.VBox):
    """Edit, plan, apply and save one cluster's firewall by clicking; the same session as the magics.

    ``FirewallPanel(cluster=None)`` (or ``%coiled_firewall [--cluster NAME]``). ``background=False``
    runs Plan, Apply and Save in the calling thread (the kernel waits; tests use it); by default they
    run in a background thread and :meth:`wait` waits for the one running.
    """

    def __init__(self, cluster: str | None = None, *, background: bool = True, **kwargs):
        view = session.show(cluster)  # a bad cluster name raises its one sentence here
        # The cluster as resolved now: the panel keeps editing it if the default changes later.
        self.cluster = view.target.cluster
        self.background = background
        self.rows: list[RuleRow] = []
        self._view = view
        self._applied: tuple | None = None
        self._edited = False
        self._loading = False
        self._pushing: int | None = None  # the thread sending this panel's edit, if one is
        self._busy = False
        self._worker: threading.Thread | None = None
        self._record = None
        self._account_id = ""
        self._sent: list[dict] | None = []
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, Callable[[int], object]]] = {}
        self._sender: threading.Thread | None = None
        # The session version the rows show, and how many times they were reloaded because the
        # session changed under them: an edit made before a reload is not sent.
        self._version = view.session_version
        self._reloads = 0
        self._unsent: str | None = None  # why the rows shown are not in the session, if so

        self.header = widgets.HTML()
        self.rows_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        self.add_button = widgets.Button(description=ADD, tooltip="Add an empty rule row")
        self.add_button.on_click(lambda _b: self.add_row())
        self.scheduler_ip = widgets.ToggleButtons(
            options=[("public", True), ("private", False)],
            description=SCHEDULER_IP,
            tooltips=[_MEANING[True], _MEANING[False]],
            style={"button_width": "80px", "description_width": "initial"},
        )
        self.scheduler_ip.observe(self._on_toggle, "value")
        self.kind = widgets.Dropdown(
            options=[("coiled (443)", "coiled"), ("dask (8786/8787)", "dask")],
            description=KIND,
            tooltip="The kind of cluster decides the ports the verdicts and the plan check",
            style={"description_width": "initial"},
            layout=widgets.Layout(width="auto"),
        )
        self.kind.observe(self._on_kind, "value")
        self.meaning = widgets.HTML()
        self.buttons = {
            PLAN: widgets.Button(
                description=PLAN, tooltip="Plan: what Apply would change (one read, no change)"
            ),
            APPLY: widgets.Button(
                description=APPLY,
                button_style="primary",
                tooltip="Apply: make the cluster's security group match these rules",
            ),
            SAVE_USER: widgets.Button(
                description=SAVE_USER,
                tooltip="Save to my config: write these settings into your Dask config file",
            ),
            SAVE_ACCOUNT: widgets.Button(
                description=SAVE_ACCOUNT,
                tooltip="Save as team default: account-wide defaults for everyone in the account",
            ),
            REVERT: widgets.Button(
                description=REVERT,
                tooltip="Revert: drop this session's changes, back to your config and the defaults",
            ),
            REHEARSE: widgets.Button(
                description=REHEARSE,
                tooltip="Rehearse: enforce the applied group with packets on this machine and "
                "measure each predicted verdict",
            ),
        }
        for button in self.buttons.values():
            button.layout.width = "auto"
        self.buttons[PLAN].on_click(lambda _b: self.plan())
        self.buttons[APPLY].on_click(lambda _b: self.apply())
        self.buttons[SAVE_USER].on_click(lambda _b: self.save("user"))
        self.buttons[SAVE_ACCOUNT].on_click(lambda _b: self.save("account"))
        self.buttons[REVERT].on_click(lambda _b: self.revert())
        self.buttons[REHEARSE].on_click(lambda _b: self.rehearse())
        self.marker = widgets.HTML()
        self.status = widgets.HTML()
        self.reachability = widgets.HTML()
        self.notes = widgets.HTML()
        self.output = widgets.Output(layout=widgets.Layout(width="100%", overflow="auto"))
        self.cell = widgets.Textarea(
            placeholder=CELL,
            tooltip=CELL + ": paste it into a cell to reproduce these settings",
            rows=9,
            layout=widgets.Layout(width="100%"),
        )
        copy = widgets.Accordion(children=[self.cell], titles=(CELL,))

        headings = widgets.HBox(
            [
                widgets.HTML(_span(title, _MUTED), layout=_column(name))
                for name, title in (
                    ("ports", "Ports"),
                    ("source", "Source"),
                    ("protocol", "Protocol"),
                    ("description", "Description"),
                    ("remove", ""),
                )
            ],
            layout=_wrap(),
        )
        super().__init__(
            [
                self.header,
                headings,
                self.rows_box,
                self.notes,
                self.add_button,
                widgets.HBox([self.scheduler_ip, self.kind], layout=_wrap()),
                self.meaning,
                widgets.HBox(list(self.buttons.values()), layout=_wrap()),
                widgets.HBox([self.status, self.marker], layout=_wrap()),
                self.reachability,
                self.output,
                copy,
            ],
            layout=widgets.Layout(width="100%", max_width="960px"),
            **kwargs,
        )
        self.add_class("cj-firewall-panel")
        self._load(view)
        self._set_status("ready")
        self._unsubscribe = session.subscribe(self._on_session)

    # ----------------------------------------------------------------------------------------------
    # Display: the widget, then a plain output that every Apply updates (for saved notebooks)

    def _ipython_display_(self):
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        note = (
            f"(the firewall of cluster {self._view.target.cluster!r} as last applied from the "
            "panel shows here, also in a saved notebook)"
        )
        self._record = display(
            {"text/plain": note, "text/html": _span(note, _MUTED)}, raw=True, display_id=True
        )

    def close(self):
        """Stop following the session, and close every control of the panel."""
        unsubscribe = getattr(self, "_unsubscribe", None)  # None: __init__ failed
        if unsubscribe is not None:
            unsubscribe()
        for row in getattr(self, "rows", []):
            for control in row.controls():
                control.close()
        super().close()

    # ----------------------------------------------------------------------------------------------
    # Rows

    def add_row(self, item: dict | None = None) -> RuleRow:
        """Add one rule row (empty unless ``item`` in Coiled's format is given)."""
        row = RuleRow(item, self._on_edit, self.remove_row)
        self.rows.append(row)
        self.rows_box.children = [r.box for r in self.rows]
        if not self._loading:
            self._on_edit()
        else:
            row.check()
        return row

    def remove_row(self, row: RuleRow) -> None:
        self.rows.remove(row)
        self.rows_box.children = [r.box for r in self.rows]
        for control in row.controls():
            control.close()
        self._on_edit()

    @property
    def valid(self) -> bool:
        return all(not row.problems for row in self.rows)

    # ----------------------------------------------------------------------------------------------
    # From the session into the controls

    def _load(self, view, *, keep_invalid: bool = False) -> None:
        """Show ``view`` (a SettingsView): rows, toggle, header, verdict, cell text, markers.

        ``keep_invalid``: rows that are invalid stay, below the session's rules (a draft the person
        is fixing; still not in the session)."""
        payload = view.to_payload()
        self._loading = True
        try:
            kept = [row for row in self.rows if keep_invalid and row.problems]
            for row in self.rows:
                if row not in kept:
                    for control in row.controls():
                        control.close()
            self.rows = []
            for item in payload["ingress"]:
                self.add_row(item)
            self.scheduler_ip.value = payload["use_scheduler_public_ip"]
            if payload.get("ports"):
                self.kind.value = payload["ports"]["kind"]
        finally:
            self._loading = False
        self._sent = [row.item() for row in self.rows if not row.blank]
        self.rows += kept
        self.rows_box.children = [r.box for r in self.rows]
        self._version = view.session_version
        self._unsent = None
        self._show_view(view)

    def _show_view(self, view) -> None:
        self._view = view
        payload = view.to_payload()
        self.header.value = self._header_html(payload)
        self.meaning.value = _block(_span(_MEANING[payload["use_scheduler_public_ip"]], _MUTED))
        self.reachability.value = _reachability_html(payload)
        self.notes.value = _notes_html(payload)
        self.cell.value = payload["copy_as_cell"]
        self._update_controls()

    def _header_html(self, payload: dict) -> str:
        pill = sandbox_pill(payload, inline=True)
        backend = f"sandbox {pill}" if pill else html.escape(payload["backend_label"])
        account = self._account_id or "shown after Plan or Apply"
        parts = [
            f"cluster <code>{html.escape(payload['cluster'])}</code>",
            f"backend {backend}",
            f"region {html.escape(payload['region'])}",
            f"account {html.escape(account)}",
        ]
        others = [name for name in payload["session_clusters"] if name != payload["cluster"]]
        kept = (
            f"<br>session settings are per cluster; also set for: {html.escape(', '.join(others))}"
            " (not used here)"
            if others
            else ""
        )
        ports = payload.get("ports")
        assumed = f"<br>ports assumed: {html.escape(ports['summary'])}" if ports else ""
        return _block(
            "<strong>Firewall</strong> "
            f'<span style="color: {_MUTED}">rules from {html.escape(payload["ingress_origin"])}'
            "</span><br>" + " &middot; ".join(parts) + assumed + _span_html(kept, _MUTED)
        )

    def _on_session(self, change) -> None:
        """A session change: from a magic or another panel (this panel's own edits are skipped).

        Another cluster's change only updates the list of clusters with session settings."""
        if self._pushing == threading.get_ident():
            self._version = change.version  # this panel's own edit, made in this thread
            return
        try:
            if change.cluster != self.cluster:
                self.header.value = self._header_html(
                    session.show(self.cluster, reach=False).to_payload()
                )
                return
            self._reloads += 1
            self._edited = True
            self._load(session.show(self.cluster), keep_invalid=True)
        except CoiledJupyterError as error:
            self._set_status(str(error), error=True)

    # ----------------------------------------------------------------------------------------------
    # From the controls into the session

    def _on_edit(self) -> None:
        """A committed change of the rows (a field left or entered, a row added or removed): sent
        when every row is valid and they differ from what was sent."""
        if self._loading:
            return
        valid = all([row.check() for row in self.rows])
        items = [row.item() for row in self.rows if not row.blank]
        if valid and items != self._sent:
            self._sent = items
            self._send_edit(
                "rules",
                lambda version: session.set_settings(
                    items, cluster=self.cluster, label="the panel", based_on=version
                ),
            )
        else:
            self._update_controls()

    def _on_kind(self, change) -> None:
        if self._loading:
            return
        self._send_edit(
            "kind", lambda _version: session.set_kind(change["new"], cluster=self.cluster)
        )

    def _on_toggle(self, change) -> None:
        if self._loading:
            return
        self._send_edit(
            "scheduler IP",
            lambda version: session.set_scheduler_ip(
                change["new"], cluster=self.cluster, based_on=version
            ),
        )

    def _send_edit(self, kind: str, edit: Callable[[int], object]) -> None:
        """Make one edit in the session: at once, or (``background``) on the panel's edit thread.

        Each edit shows the new settings, and with them the reachability verdict, which may wait
        on the public-address lookup (seconds when offline): a thread keeps typing fluid. Only the
        newest waiting edit of each kind is sent. ``edit(version)`` makes the edit from the session
        version the rows show; an edit made before the rows were reloaded is not sent at all.
        """
        made_from = self._reloads
        if not self.background:
            self._push(made_from, edit)
            return
        with self._lock:
            self._pending[kind] = (made_from, edit)
            if self._sender is not None and self._sender.is_alive():
                return
            context = contextvars.copy_context()
            self._sender = threading.Thread(target=context.run, args=(self._drain,), daemon=True)
            self._sender.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._sender = None
                    return
                kind = next(iter(self._pending))
                made_from, edit = self._pending.pop(kind)
            self._push(made_from, edit)

    def _push(self, made_from: int, edit: Callable[[int], object]) -> None:
        """Make one edit in the session; its sentence in the status line if the core refuses it.

        A stale edit (made before the rows were reloaded, or refused by the session because it
        changed meanwhile) is not made: the rows are reloaded from the session and the status line
        says so."""
        if made_from != self._reloads:
            self._set_status(_STALE, error=True)
            return
        self._pushing = threading.get_ident()
        try:
            view = edit(self._version)
        except StaleEdit as error:
            self._pushing = None
            self._reload_after(str(error))
            return
        except CoiledJupyterError as error:
            self._sent = None  # not in the session: the next edit sends the rows again
            self._unsent = str(error)
            self._set_status(str(error), error=True)
            self._update_controls()
            return
        except Exception as error:  # a bug: say so here, and keep the traceback below
            self._sent = None
            self._unsent = f"unexpected {type(error).__name__}: {error}"
            self._unexpected(error)
            return
        finally:
            self._pushing = None
        self._unsent = None
        self._edited = True
        if made_from != self._reloads:
            return  # the session changed while the view was made: the reload showed the newer one
        if not self._busy:  # an operation started meanwhile keeps its own status line
            self._set_status("ready")
        self._show_view(view)

    # ----------------------------------------------------------------------------------------------
    # Buttons

    def _reload_after(self, sentence: str) -> None:
        """Show the session as it is now (keeping invalid rows), with ``sentence`` in the status."""
        self._reloads += 1
        try:
            self._load(session.show(self.cluster), keep_invalid=True)
        except CoiledJupyterError as error:
            sentence = str(error)
        self._set_status(sentence, error=True)

    def plan(self) -> None:
        """What Apply would change, for the rows as shown; the core's plan in the result area."""
        if self._refuse_draft("planned"):
            return
        self._run("planning", lambda progress: session.plan(self.cluster), self._planned)

    def _refuse_draft(self, done: str) -> bool:
        """Refuse (True) with the row's sentence when a row is invalid: Plan and Apply act on what
        the person sees, and an invalid row is not in the session."""
        problems = [p for row in self.rows for p in row.problems]
        if not problems:
            return False
        self._set_status(f"not {done}: a row is not valid: {problems[0]}", error=True)
        return True

    def apply(self) -> None:
        """Make the cluster's group match; the group's rules as read back in the result area."""
        if self._refuse_draft("applied"):
            return
        self._run(
            "applying",
            lambda progress: session.apply(self.cluster, progress=progress),
            self._applied_result,
        )

    def save(self, scope: str) -> None:
        """Keep this session's settings: ``user`` (Dask config file) or ``account`` (team)."""
        self._run("saving", lambda progress: session.save(scope, cluster=self.cluster), None)

    def revert(self) -> None:
        """Drop this session's settings: back to the saved config and the defaults."""
        self._run("reverting", lambda progress: session.reset(self.cluster), None)

    def rehearse(self) -> None:
        """The applied group enforced with packets; predicted beside measured in the result area."""
        self._run(
            "rehearsing",
            lambda progress: session.rehearse(self.cluster, progress=progress),
            None,
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running operation and the edits still being sent; True when all are done."""
        for thread in (self._sender, self._worker):
            if thread is not None:
                thread.join(timeout)
        return not any(t is not None and t.is_alive() for t in (self._sender, self._worker))

    def _planned(self, plan) -> None:
        if not plan.changes:  # the rules the plan read are what the group holds
            self._applied = _rule_snapshot(plan.settings.rules)

    def _applied_result(self, result) -> None:
        # The rules the apply read, not the rows now: an edit made while it ran is not applied.
        self._applied = _rule_snapshot(result.settings.rules)
        if self._record is not None:
            self._record.update(result)

    def _run(self, doing: str, work, after) -> None:
        """Run one operation: buttons off and a status line while it runs; its result or its
        sentence shown at the end. In a background thread unless ``background`` is False."""
        if self._busy:
            return
        self._busy = True
        self._set_status(self._starting(doing) + "...")
        self._update_controls()

        def progress(sentence: str) -> None:
            self._set_status(f"{doing}: {sentence}")

        def run() -> None:
            sender = self._sender
            if sender is not None:
                sender.join()  # the operation acts on the newest edit
            try:
                if self._unsent is not None and doing in ("planning", "applying", "saving"):
                    raise CoiledJupyterError(
                        f"not {doing}: the rows shown are not in the session ({self._unsent})"
                    )
                result = work(progress)
                self._show_result(result)
                if after is not None:
                    after(result)
                self._set_status("ready")
            except CoiledJupyterError as error:
                self._set_status(str(error), error=True)
            except Exception as error:  # a bug: say so here, and keep the traceback below
                self._unexpected(error)
            finally:
                self._busy = False
                self._refresh()

        if self.background:
            context = contextvars.copy_context()
            self._worker = threading.Thread(target=context.run, args=(run,), daemon=True)
            self._worker.start()
        else:
            run()

    def _unexpected(self, error: Exception) -> None:
        self._set_status(f"unexpected {type(error).__name__}: {error}", error=True)
        self.output.append_stderr(traceback.format_exc())

    def _starting(self, doing: str) -> str:
        """``doing``, or that the sandbox is starting first (its cold start takes seconds)."""
        if self._view.target.backend == "sandbox" and doing != "reverting":
            if not session.sandbox_running():
                return "starting the sandbox (a local moto server, not AWS), then " + doing
        return doing

    def _show_result(self, result) -> None:
        payload = result.to_payload()
        if payload.get("account_id"):
            self._account_id = payload["account_id"]
        self.output.outputs = (
            {"output_type": "display_data", "data": result._repr_mimebundle_(), "metadata": {}},
        )

    def _refresh(self) -> None:
        """Re-read the settings (a save or revert changes where they come from)."""
        try:
            view = session.show(self.cluster)
        except CoiledJupyterError as error:
            self._set_status(str(error), error=True)
            self._update_controls()
            return
        if _rule_snapshot(view.settings.rules) != _rule_snapshot(self._view.settings.rules) or (
            view.settings.use_scheduler_public_ip.value
            != self._view.settings.use_scheduler_public_ip.value
        ):
            self._load(view)
        else:
            self._show_view(view)

    # ----------------------------------------------------------------------------------------------
    # State of the controls

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.status.value = _block(_span(text, _ERROR if error else _MUTED))

    def _update_controls(self) -> None:
        valid = self.valid
        for name, button in self.buttons.items():
            button.disabled = self._busy or (not valid and name in (APPLY, SAVE_USER, SAVE_ACCOUNT))
        self.add_button.disabled = self._busy
        self.scheduler_ip.disabled = self._busy
        self.kind.disabled = self._busy
        for row in self.rows:
            for control in row.controls():
                control.disabled = self._busy
        self.marker.value = self._marker_html(valid)

    def _marker_html(self, valid: bool) -> str:
        marks = []
        if not valid:
            marks.append("invalid rows are not in the session yet")
        rules = _rule_snapshot(self._view.settings.rules)
        if (self._applied is None and self._edited) or (
            self._applied is not None and rules != self._applied
        ):
            marks.append("unapplied changes")
        if self._view.unsaved:
            marks.append("unsaved changes")
        return _block(_span("● " + ", ".join(marks), _WARN)) if marks else ""


_STALE = (
    "an edit was not made: the session changed (a magic, the sidebar or another panel) after it "
    "was made, and it would undo that change. The rows show the session; make the edit again."
)


def _span_html(inner_html: str, color: str) -> str:
    """``inner_html`` (already escaped) in ``color``."""
    return f'<span style="color: {color}">{inner_html}</span>' if inner_html else ""


def _notes_html(payload: dict) -> str:
    """The settings' notes (what the rules replace, what was not read, what changed since), said
    before anything is applied; the notes about coiled.Cluster() stay with the magic's table."""
    notes = payload.get("notes", [])
    return _block("<br>".join(_span(f"note: {note}", _MUTED) for note in notes)) if notes else ""


def _reachability_html(payload: dict) -> str:
    reach = payload.get("reachability")
    if not reach:
        return ""
    colors = {"yes": "var(--jp-success-color1)", "no": _ERROR}
    # Ports with the same verdict for the same reason share one line.
    verdicts: dict[tuple[str, str], list[str]] = {}
    for port in (reach["scheduler"], reach["dashboard"]):
        verdicts.setdefault((port["verdict"], port["reason"]), []).append(
            f"{port['name']} (port {int(port['port'])})"
        )
    lines = [
        f"can this notebook reach the {html.escape(' and the '.join(names))}? "
        f"{_span(verdict, colors.get(verdict, _WARN))}: {html.escape(reason)}"
        for (verdict, reason), names in verdicts.items()
    ]
    lines += [_span(f"warning: {w}", _WARN) for w in payload.get("warnings", [])]
    return _block("<br>".join(lines))


def _wrap() -> widgets.Layout:
    return widgets.Layout(flex_flow="row wrap", align_items="center", width="100%")
