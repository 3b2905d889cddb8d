"""IPython magics: ``%coiled_ingress``, ``%%coiled_ingress``, ``%coiled_scheduler_ip``, ``%coiled_firewall``.

A front end only: each command parses what was typed, makes one call to :mod:`.session` (the same
functions the panel and the REST handlers call) and returns its result object, so that
``t = %coiled_ingress describe`` works and the same tables appear as in the panel and the sidebar.

Style follows jupysql's ``SqlMagic``: one ``Magics``/``Configurable`` class whose options are traitlets
(``%config CoiledMagics.cluster = "prod"``, or ``c.CoiledMagics.cluster`` in ``ipython_config.py``), and
``magic_arguments`` for the help text. A person's mistake (a bad port or network, an unknown subcommand,
a missing variable, a cloud call that failed) raises a plain :class:`~IPython.core.error.UsageError` with
the project's one sentence, so the cell fails (a headless run stops) and no traceback is shown. Every
input is validated before anything is changed or sent, so nothing is half-applied.

Only IPython, traitlets, the standard library and the light core modules (session, settings, rules)
are imported here at module level, so that ``%load_ext coiled_jupyter`` stays light: boto3, moto and
distributed load on the first command that needs them.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import shlex
import string

from IPython.core.error import TryNext, UsageError
from IPython.core.magic import (
    Magics,
    line_cell_magic,
    line_magic,
    magics_class,
    no_var_expand,
)
from IPython.core.magic_arguments import argument, kwds, magic_arguments
from traitlets import Bool, Unicode, observe
from traitlets.config.configurable import Configurable

from . import session
from .errors import CoiledJupyterError
from .session import SCHEDULER_IP_WORDS, SCOPES, check_value, excerpt

SUBCOMMANDS = (
    "add",
    "remove",
    "set",
    "clear",
    "reset",
    "plan",
    "apply",
    "describe",
    "destroy",
    "save",
    "history",
    "undo",
    "rehearse",
    "ports",
    "export",
    "import",
    "guard",
)
# The subcommands that show the settings view (as %coiled_ingress alone does), so -v applies.
_SHOWING_SETTINGS = (None, "add", "remove", "set", "clear", "reset")

# Options of %coiled_ingress that only some subcommands take (the rest take only --cluster).
_OPTIONS_OF = {
    "add": ("description", "protocol"),
    "remove": ("protocol",),
    "save": ("scope",),
    "undo": ("apply",),
    "rehearse": ("live", "stop"),
    "export": ("to",),
    "plan": ("override_guardrail", "reason"),
    "apply": ("override_guardrail", "reason"),
}
_OPTION_FLAGS = {
    "description": "--description",
    "protocol": "--protocol",
    "scope": "--scope",
    "to": "--to",
    "override_guardrail": "--override-guardrail",
    "reason": "--reason",
    "apply": "--apply",
    "verbose": "--verbose",
    "live": "--live",
    "stop": "--stop",
}
# Options that take a value, to find where the subcommand word is.
_VALUE_OPTIONS = (
    "-c",
    "--cluster",
    "-d",
    "--description",
    "-p",
    "--protocol",
    "--scope",
    "--to",
    "--override-guardrail",
    "--reason",
    "--kind",
)
_CLUSTER_OPTION = re.compile(r"(?:-c|--cluster)(?:=|\s+)(\S+)")
_HELP_OPTION = re.compile(r"(?:-h|--help)(?=\s|$)")

# The cell magic's example, in Coiled's documented format.
_CELL_EXAMPLE = """\
  coiled:
    backend-options:
      ingress:
        - ports: [8786, 8787]
          cidr: 10.1.0.0/16
    use_scheduler_public_ip: false
"""

_INGRESS_DESCRIPTION = (
    """\
Show or change the firewall ingress rules of Dask clusters (an EC2 security group per cluster).

  %coiled_ingress                       the effective settings, where each came from, and whether
                                        this notebook can reach the scheduler and the dashboard
  %coiled_ingress add PORTS SOURCE      admit SOURCE on PORTS [--description TEXT] [--protocol udp]
  %coiled_ingress remove PORTS SOURCE   remove exactly those rules [--protocol udp]
  %coiled_ingress set RULES             replace the rules by a YAML or JSON rule list, e.g.
                                        %coiled_ingress set [{ports: [443], cidr: 10.1.0.0/16}]
                                        or by Coiled's keywords, as coiled.Cluster takes them:
                                        %coiled_ingress set allow_ingress_from=me allow_ssh=true
  %coiled_ingress clear                 no rules: only the cluster's own internal traffic
  %coiled_ingress reset                 drop this session's settings (back to config and defaults)
  %coiled_ingress plan                  what apply would change (one read, no change)
  %coiled_ingress apply                 make the cluster's security group match; show its rules
  %coiled_ingress describe              the group's rules as the cloud reports them
  %coiled_ingress destroy               delete the cluster's security group
  %coiled_ingress save [--scope user]   keep this session's settings in Dask's config file
  %coiled_ingress save --scope account  ... or as account-wide defaults for the whole team
  %coiled_ingress rehearse              enforce the group with packets on this machine (network
                                        namespaces, nftables, a real dask scheduler) and set each
                                        predicted verdict beside a measured one [--stop]
  %coiled_ingress rehearse --live       connect from this notebook to the real scheduler and
                                        dashboard, beside the predicted verdicts
  %coiled_ingress export FORMAT         the rules for IT: terraform, coiled, csv, markdown or
                                        aws-cli [--to FILE]
  %coiled_ingress import FORMAT FILE    set the session's rules from such an export
  %coiled_ingress guard [NAME VALUE]    the team's guardrails, or set one: no-world PORTS,
                                        within NETWORKS, widest IPV4 [IPV6], max-rules K;
                                        guard clear NAME removes one. A plan that breaks one
                                        is refused unless --override-guardrail NAME --reason TEXT
  %coiled_ingress ports                 each port the cluster listens on, what uses it, and
                                        whether the rules admit it and from where
  %coiled_ingress history               the group's rules before each apply from this machine
  %coiled_ingress undo [--apply]        plan (or apply) the way back to before the last apply
  -v, --verbose                         the settings with every layer, note and reason

--kind coiled|dask (with any subcommand) says which kind of cluster the rules are for, for this
session: coiled (coiled.Cluster: scheduler and HTTPS dashboard on coiled.scheduler_port, 443 by
default) or dask (a plain Dask cluster: 8786 and 8787). Default: the Dask config key
coiled-jupyter.cluster-kind, else coiled. Every table says which kind and ports it assumed.

PORTS is 8786, 8786,8787 or 8000-8100. SOURCE is a network (10.1.0.0/16), one address
(203.0.113.7), me (this notebook's public address), everyone, or a security group id (sg-...).

The cell magic takes Coiled's format: a rule list, a coiled: snippet as in Coiled's docs, or
Coiled's network keywords (allow_ingress_from: me, allow_ssh_from, allow_ssh, allow_spark,
open_extra_ports, scheduler_port), which become the rules coiled.Cluster builds from them.
Without --apply it sets the session and shows the settings; with --apply it also applies.

  %%coiled_ingress [--cluster NAME] [--apply]
"""
    + _CELL_EXAMPLE
    + """
add, remove, set, clear, reset and the cell change this notebook's session layer and return the
new settings. coiled.Cluster() does not read rules from the session or from Dask's config (saved
ones included): hand them over as coiled.Cluster(**coiled_jupyter.cluster_kwargs()).
--cluster NAME picks the cluster (default: %config CoiledMagics.cluster, else the Dask config
key coiled-jupyter.cluster). ${name} in the line or the cell is replaced by the notebook
variable name; write $$ for a literal $.
"""
)

# What %coiled_ingress -h prints: one screen. The details of each subcommand are -h SUBCOMMAND.
_INGRESS_SHORT_HELP = """\
%coiled_ingress [SUBCOMMAND ...] [--cluster NAME]: the firewall of a Dask cluster's security group

  %coiled_ingress [-v]              the settings, their origin, a verdict line (-v: every reason)
  %coiled_ingress add PORTS SOURCE  admit SOURCE on PORTS [--description TEXT] [--protocol udp]
  %coiled_ingress remove PORTS SOURCE   remove exactly those rules
  %coiled_ingress set RULES         replace the rules by a YAML or JSON rule list
  %coiled_ingress clear | reset     no rules | drop this session's settings (back to defaults)
  %coiled_ingress plan | apply      what apply would change; make the group match, show it
  %coiled_ingress describe | destroy   the group's rules as the cloud has them; delete the group
  %coiled_ingress save [--scope user|account]   keep this session's settings
  %coiled_ingress history | undo [--apply]   past applies; plan (or apply) the way back
  %coiled_ingress export | import FORMAT ...  terraform, coiled, csv, markdown or aws-cli
  %coiled_ingress guard [NAME VALUE]  the team's guardrails (no-world, within, widest, max-rules)
  %coiled_ingress rehearse [--live|--stop]   the rules enforced with packets on this machine
  %coiled_ingress ports             each port of the cluster's kind, its use, what admits it
  %%coiled_ingress [--cluster NAME] [--apply]   a cell: a rule list or a coiled: snippet

PORTS: 8786, 8786-8787 or 8786,8787. SOURCE: a network (10.1.0.0/16), an address, me (this
notebook's public address), everyone, or a security group id (sg-...). ${name} inserts the
notebook variable name; a # after a space starts a comment.
Details: %coiled_ingress -h SUBCOMMAND, e.g. %coiled_ingress -h add
"""

_CLUSTER_HELP = (
    "\n--cluster NAME picks the cluster (default: %config CoiledMagics.cluster, else the Dask config "
    "key coiled-jupyter.cluster)."
)
_SETTINGS_HELP = (
    "It changes this notebook's session layer and shows the new settings (-v: every layer and "
    "note). coiled.Cluster() does not read rules from the session or from Dask's config: hand them "
    "over as coiled.Cluster(**coiled_jupyter.cluster_kwargs())."
)

# What %coiled_ingress -h SUBCOMMAND prints.
_SUBCOMMAND_HELP = {
    "add": f"""\
%coiled_ingress add PORTS SOURCE [--description TEXT] [--protocol tcp|udp] [--cluster NAME]

Admit SOURCE on PORTS. PORTS is 8786, 8786-8787 or 8786,8787. SOURCE is a network (10.1.0.0/16),
one address (203.0.113.7), me (this notebook's public address, looked up again at apply),
everyone (0.0.0.0/0 and ::/0), or a security group id (sg-...). add starts from the effective
rules, except over the built-in default: declaring rules replaces the world-open default, so the
first add leaves only the rule you wrote. {_SETTINGS_HELP}

  %coiled_ingress add 8786-8787 10.1.0.0/16 --description "office VPN"
""",
    "remove": f"""\
%coiled_ingress remove PORTS SOURCE [--protocol tcp|udp] [--cluster NAME]

Remove exactly those rules from the effective rules (a port inside a range is cut out of it).
{_SETTINGS_HELP}

  %coiled_ingress remove 8787 10.1.0.0/16
""",
    "set": f"""\
%coiled_ingress set RULES [--cluster NAME]

Replace the rules by a YAML or JSON rule list in Coiled's format (ports, cidr, and our
description and protocol), or by Coiled's network keywords as coiled.Cluster takes them
(allow_ingress_from, allow_ssh_from, allow_ssh, allow_spark, open_extra_ports, scheduler_port),
which become exactly the rules Coiled builds from them. {_SETTINGS_HELP}

  %coiled_ingress set [{{ports: [443], cidr: 10.1.0.0/16, description: office VPN}}]
  %coiled_ingress set allow_ingress_from=me allow_ssh_from=10.1.0.0/16
""",
    "ports": f"""\
%coiled_ingress ports [--kind coiled|dask] [--cluster NAME]

For the cluster's kind, each port it listens on, what uses it (client to scheduler, dashboard,
SSH, Spark, Jupyter, workers among themselves), and whether the effective rules admit it and from
where. coiled: the scheduler and the HTTPS dashboard on coiled.scheduler_port (443 by default),
SSH 22, Spark 15003, Jupyter 8888; dask: 8786 and 8787. --kind sets the kind for this session
(default: coiled-jupyter.cluster-kind in Dask's config, else coiled). {_CLUSTER_HELP}
""",
    "clear": f"""\
%coiled_ingress clear [--cluster NAME]

No rules at all: only the cluster's own internal traffic. {_SETTINGS_HELP}
""",
    "reset": """\
%coiled_ingress reset [--cluster NAME]

Drop this session's settings: back to Dask's config file, the account defaults and the built-in
default. The scheduler-IP toggle in the kernel's Dask config goes back to what it was.
""",
    "plan": f"""\
%coiled_ingress plan [--override-guardrail NAME --reason TEXT] [--cluster NAME]

What apply would change: create the group, add, remove, update or keep rules. One read, no change.
It reads the account defaults and says which rules the effective rules replace. {_CLUSTER_HELP}
""",
    "apply": f"""\
%coiled_ingress apply [--override-guardrail NAME --reason TEXT] [--cluster NAME]

Make the cluster's security group match the effective settings and show its rules as the cloud
confirmed them. The group's rules before the apply are kept on this machine: %coiled_ingress
history lists them and %coiled_ingress undo goes back. {_CLUSTER_HELP}
""",
    "describe": f"""\
%coiled_ingress describe [--cluster NAME]

The group's rules as the cloud reports them (t = %coiled_ingress describe keeps the table).
{_CLUSTER_HELP}
""",
    "destroy": f"""\
%coiled_ingress destroy [--cluster NAME]

Delete the cluster's security group, if it exists and was created by coiled_jupyter.
{_CLUSTER_HELP}
""",
    "save": """\
%coiled_ingress save [--scope user|account] [--cluster NAME]

Keep what this session sets: --scope user (the default) in Dask's config file (coiled.yaml), which
new kernels and coiled.Cluster() read the scheduler-IP toggle from; --scope account as the
account-wide defaults of the whole team (an SSM parameter in the account).
""",
    "history": f"""\
%coiled_ingress history [--cluster NAME]

The group's rules before each apply made from this machine (kept in the state folder), newest
first, with what the apply changed. {_CLUSTER_HELP}
""",
    "undo": f"""\
%coiled_ingress undo [--apply] [--cluster NAME]

Plan the way back to the group's rules before the last apply made from this machine: it shows the
plan and changes nothing. With --apply it applies that plan (and a later undo goes back again).
The rules are set in this session too, so the next apply keeps them. {_CLUSTER_HELP}
""",
}

_SUBCOMMAND_HELP["export"] = f"""\
%coiled_ingress export FORMAT [--to FILE] [--cluster NAME]

The effective rules for IT, in their tools' formats: terraform, coiled (Coiled's ingress), csv,
markdown (a port matrix) or aws-cli. --to FILE writes it to a file. What a format cannot carry is
named under the export. {_CLUSTER_HELP}

  %coiled_ingress export terraform --to firewall.tf
"""
_SUBCOMMAND_HELP["import"] = f"""\
%coiled_ingress import FORMAT FILE [--cluster NAME]

Set this session's rules from an export (any format export writes), as set would; nothing reaches
the cloud until a plan and an apply. {_CLUSTER_HELP}

  %coiled_ingress import terraform firewall.tf
"""

_SUBCOMMAND_HELP["guard"] = """\
%coiled_ingress guard [NAME VALUE ... | clear NAME]

The team's guardrails, kept with the account defaults and checked by every plan and apply of
everyone who reads them, before any write: no-world PORTS (never open to 0.0.0.0/0 or ::/0),
within NETWORKS (sources only inside them), widest IPV4 [IPV6] (no wider prefix), max-rules K.
Without a value it lists them, who set each and when; clear NAME (or clear all) removes one.
A plan that breaks one is refused unless it names it: --override-guardrail NAME --reason TEXT.

  %coiled_ingress guard no-world 8786,8787
  %coiled_ingress apply --override-guardrail no-world --reason "vendor debugging until 17:00"
"""

_SUBCOMMAND_HELP["rehearse"] = f"""\
%coiled_ingress rehearse [--live | --stop] [--cluster NAME]

Enforce the cluster's group, as the sandbox holds it, with nftables in front of a real Dask
scheduler in network namespaces of this machine (linked only to each other), and measure each
verdict with a real connection: source, port, predicted, measured. --live instead connects from
this notebook to the real scheduler's address; --stop tears the rehearsal down. {_CLUSTER_HELP}
"""

_CELL_HELP = (
    """\
%%coiled_ingress [--cluster NAME] [--kind coiled|dask] [--apply]
RULES

The cell takes Coiled's format: a rule list, a coiled: snippet as in Coiled's docs, or Coiled's
network keywords (allow_ingress_from: me, allow_ssh: true, ...). --kind coiled|dask says which
kind of cluster the rules are for. Without --apply it sets the session and shows the settings;
with --apply it also applies (all or nothing).
${name} in the cell is replaced by the notebook variable name; write $$ for a literal $.

  %%coiled_ingress
"""
    + _CELL_EXAMPLE
)

_SCHEDULER_IP_DESCRIPTION = """\
Show, or set for this notebook session, whether clients connect to the scheduler's public or
private IP (Coiled's use_scheduler_public_ip). It is also set in the kernel's Dask config
(coiled.use_scheduler_public_ip), which a coiled.Cluster() created later in this kernel reads by
itself; %coiled_ingress reset puts back the value that was there before.

  %coiled_scheduler_ip            show the setting, where it came from, and reachability
  %coiled_scheduler_ip private    connect on the private IP (VPN, peered VPC, same VPC)
  %coiled_scheduler_ip public     connect on the public IP
"""

_FIREWALL_DESCRIPTION = """\
Open the firewall panel: the same session settings as %coiled_ingress, edited by clicking.
Rows of rules (ports, source, protocol, description), the public/private scheduler IP, and
Plan, Apply, Save to my config, Save as team default, Revert and Rehearse. A row reaches the
session when you commit it (Enter or leaving the field) and it is valid, so the next
%coiled_ingress shows it; a change made by a magic shows in an open panel. Settings are per
cluster: the panel edits the cluster's own.

  %coiled_firewall [--cluster NAME]
"""


# --------------------------------------------------------------------------------------------------
# Errors


@contextlib.contextmanager
def _usage_errors():
    """Turn a person's mistake or a failed cloud call into a plain UsageError: one sentence, no
    traceback (IPython shows a traceback for every other class, subclasses of UsageError included)."""
    try:
        yield
    except UsageError:
        raise
    except CoiledJupyterError as error:
        raise UsageError(str(error)) from None


# --------------------------------------------------------------------------------------------------
# ${name} substitution: a value is one token, never options or lines


def _template(text: str, namespace: dict, where: str) -> string.Template:
    """The text as a string.Template, after checking every '$' and that every name is defined."""
    template = string.Template(text)
    for match in template.pattern.finditer(text):
        if match.group("invalid") is not None:
            before = text[: match.start("invalid")].splitlines(keepends=True)
            line_number = max(len(before), 1)
            column = match.start("invalid") - len("".join(before[:-1])) if before else 1
            raise UsageError(
                f"'$' at line {line_number}, column {column} of {where} does not "
                "start a variable; write ${name} to insert the notebook variable "
                "name, or $$ for a literal '$'."
            )
    missing = [name for name in dict.fromkeys(template.get_identifiers()) if name not in namespace]
    if missing:
        names = " and ".join(repr(n) for n in missing)
        plural = "variables" if len(missing) > 1 else "variable"
        raise UsageError(
            f"{plural} {names} in {where} {'are' if len(missing) > 1 else 'is'} not "
            f"defined in this notebook; define {'them' if len(missing) > 1 else 'it'} "
            f'in an earlier cell (e.g. {missing[0]} = "10.1.0.0/16"), or write $$ '
            "for a literal '$'."
        )
    return template


def _as_text(name: str, value, where: str) -> str:
    """A variable's value as text: strings as they are, other values as JSON (which is YAML). Control
    characters (a newline above all) are refused: a value must never start another line."""
    if isinstance(value, str):
        text = value
    else:
        check_value(value, f"variable {name!r} in {where}")
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = str(value)
    bad = sorted({c for c in text if ord(c) < 32 or ord(c) == 127})
    if bad:
        raise UsageError(
            f"variable {name!r} in {where} holds the control character {bad[0]!r}; a value is "
            "inserted as one word on its line, so remove it (e.g. name.strip())."
        )
    return text


def substitute(text: str, namespace: dict, where: str) -> str:
    """Replace ``${name}`` (and ``$name``) in a magic's line by notebook variables, ``$$`` by ``$``.

    Each value becomes exactly one shell word, quoted for where it stands (outside quotes, inside
    "..." or '...'), so it can never add options or words: ``name = "x --cluster prod"`` gives the
    single value ``x --cluster prod``. A value starting with '-' is refused, since argparse would take
    even a quoted word like that for an option.
    """
    if "$" not in text:
        return text
    template = _template(text, namespace, where)
    out: list[str] = []
    position = 0
    for match in template.pattern.finditer(text):
        out.append(text[position : match.start()])
        position = match.end()
        if match.group("escaped") is not None:
            out.append("$")
            continue
        name = match.group("named") or match.group("braced")
        value = _as_text(name, namespace[name], where)
        if value.startswith("-"):
            raise UsageError(
                f"variable {name!r} in {where} starts with '-', which would be read as an option; "
                "a value cannot add options."
            )
        out.append(_quoted(value, _shell_context("".join(out))))
    out.append(text[position:])
    return "".join(out)


def _quote_states(text: str):
    """Each position of ``text`` (and its end) with whether it stands outside quotes (''), inside
    "..." or inside '...', as shlex reads them; a character escaped by a backslash is skipped."""
    state, index = "", 0
    while index < len(text):
        yield index, state
        char = text[index]
        if state == "" and char in "'\"":
            state = char
        elif state == char:
            state = ""
        elif char == "\\" and state != "'":
            index += 1
        index += 1
    yield len(text), state


def _shell_context(before: str) -> str:
    """Whether the end of ``before`` is outside quotes (''), inside "..." or inside '...' (shlex)."""
    return list(_quote_states(before))[-1][1]


def _quoted(value: str, context: str) -> str:
    if context == "'":
        return value.replace("'", "'\"'\"'")
    if context == '"':
        return value.replace("\\", "\\\\").replace('"', '\\"')
    return shlex.quote(value)


class _Placeholders:
    """For YAML text: each ``${name}`` becomes a unique plain word, the text is read as YAML, and
    :meth:`fill` puts the values into what was read, so that a value is always one value, never
    more YAML (no keys, rules or lines of its own)."""

    def __init__(self, text: str, namespace: dict, where: str):
        import secrets

        self.where = where
        self.namespace = namespace
        nonce = secrets.token_hex(6)
        self.pattern = re.compile(rf"cjvar{nonce}n([0-9]+)x")
        self.order: list[str] = []
        pieces: list[str] = []
        position = 0
        for match in _template(text, namespace, where).pattern.finditer(text):
            pieces.append(text[position : match.start()])
            position = match.end()
            if match.group("escaped") is not None:
                pieces.append("$")
            else:
                self.order.append(match.group("named") or match.group("braced"))
                pieces.append(f"cjvar{nonce}n{len(self.order) - 1}x")
        pieces.append(text[position:])
        self.text = "".join(pieces)

    def fill(self, data):
        if isinstance(data, str):
            whole = self.pattern.fullmatch(data)
            if whole:
                return self.namespace[self.order[int(whole.group(1))]]
            return self.pattern.sub(self._text_of, data)
        if isinstance(data, list):
            return [self.fill(item) for item in data]
        if isinstance(data, dict):
            filled: dict = {}
            for key, value in data.items():
                name = self.pattern.sub(self._text_of, key) if isinstance(key, str) else key
                if name in filled:
                    raise UsageError(
                        f"{self.where} has the key {name!r} twice once its variables are "
                        "inserted; keep one."
                    )
                filled[name] = self.fill(value)
            return filled
        return data

    def _text_of(self, match) -> str:
        name = self.order[int(match.group(1))]
        value = self.namespace[name]
        if isinstance(value, (list, dict, tuple)):
            raise UsageError(
                f"variable {name!r} in {self.where} holds a {type(value).__name__}, which can "
                "only stand as a whole value (e.g. ingress: ${" + name + "}), not inside text."
            )
        return _as_text(name, value, self.where)


def substitute_yaml(text: str, namespace: dict, where: str):
    """YAML text with ``${name}`` into Python values: the text is read first, and each variable's
    value then takes the place of its one scalar (a whole ``${rules}`` may be a list of rules), so
    no value can add keys, rules or lines."""
    session.check_size(text, where)  # before any scan of it
    if "$" not in text:
        return session.load_text(text, where)
    placeholders = _Placeholders(text, namespace, where)
    return placeholders.fill(session.load_text(placeholders.text, where))


# --------------------------------------------------------------------------------------------------
# The magics


@magics_class
class CoiledMagics(Magics, Configurable):
    """``%coiled_ingress``, ``%%coiled_ingress``, ``%coiled_scheduler_ip`` and ``%coiled_firewall``."""

    cluster = Unicode(
        "",
        config=True,
        help="Cluster the magics (and the panel, and cluster_kwargs()) act on when no cluster is "
        "named, in this kernel; empty means the Dask config key coiled-jupyter.cluster.",
    )
    show_reachability = Bool(
        True,
        config=True,
        help="Say whether this notebook can reach the scheduler and dashboard when showing settings.",
    )

    def __init__(self, shell=None, **kwargs):
        # Magics.__init__ adds this object to shell.configurables (for %config) and takes the
        # shell as traitlets parent (for ipython_config.py).
        super().__init__(shell=shell, **kwargs)
        session.use_default_cluster(self.cluster or None)

    @observe("cluster")
    def _default_cluster_changed(self, change) -> None:
        """One default cluster in the kernel: the panel, cluster_kwargs() and the toggle mirrored
        into Dask's config follow %config CoiledMagics.cluster too."""
        session.use_default_cluster(change["new"] or None)

    # ----------------------------------------------------------------------------------------------
    # %coiled_ingress and %%coiled_ingress

    @no_var_expand
    @line_cell_magic
    @magic_arguments()
    @kwds(
        description=_INGRESS_DESCRIPTION,
        usage="coiled_ingress [SUBCOMMAND [ARGS]] [--cluster NAME] [options]\n"
        "  %%%%coiled_ingress [--cluster NAME] [--apply]",
    )
    @argument(
        "words",
        nargs="*",
        metavar="SUBCOMMAND [ARGS]",
        help="one of " + ", ".join(SUBCOMMANDS) + "; none shows the settings",
    )
    @argument("-c", "--cluster", metavar="NAME", help="the cluster (default: CoiledMagics.cluster)")
    @argument("-d", "--description", metavar="TEXT", help="add: the rule's description")
    @argument("-p", "--protocol", metavar="tcp|udp", help="add, remove: protocol (default tcp)")
    @argument(
        "--scope",
        metavar="user|account",
        help="save: your Dask config file (user, default) or account-wide defaults",
    )
    @argument("--to", metavar="FILE", help="export: write the export to FILE")
    @argument(
        "--override-guardrail",
        action="append",
        metavar="NAME",
        help="plan, apply: break this team guardrail (with --reason)",
    )
    @argument("--reason", action="append", metavar="TEXT", help="why a guardrail is overridden")
    @argument("--apply", action="store_true", help="cell, undo: apply (after setting the rules)")
    @argument("-v", "--verbose", action="store_true", help="settings: every layer, note and reason")
    @argument("--live", action="store_true", help="rehearse: connect to the real cluster")
    @argument("--stop", action="store_true", help="rehearse: tear the rehearsal down")
    @argument(
        "--kind",
        metavar="coiled|dask",
        help="the kind of cluster (its ports), kept for this session",
    )
    @argument("-h", "--help", action="store_true", help="print this help")
    def coiled_ingress(self, line="", cell=None):
        with _usage_errors():
            line = strip_comment(line)
            if cell is not None:
                return self._ingress_cell(self._substitute(line), cell)
            return self._ingress_line(line)

    def _substitute(self, line: str) -> str:
        where = "the magic's line"
        session.check_size(line, where)
        line = substitute(line, self.shell.user_ns, where)
        session.check_size(line, f"{where} with its variables inserted")
        return line

    def _ingress_line(self, line: str):
        session.check_size(line, "the magic's line")  # before any scanning of it
        parser = self.coiled_ingress.parser
        word, start, end = _first_word(line)
        if word == "set":
            before, body = line[:start], line[end:]
            body, options = _peel_options(body)
            options = [word for option in options for word in _split(self._substitute(option))]
            args = _parse(parser, [*_split(self._substitute(before)), *options])
            args.words = ["set"]
        else:
            args = _parse(parser, _split(self._substitute(line)))
            body = None
        command = args.words[0] if args.words else None
        if command is not None and command not in SUBCOMMANDS:
            close = difflib.get_close_matches(command, SUBCOMMANDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(
                f"%coiled_ingress has no subcommand {excerpt(command)}; {hint}use one of "
                f"{', '.join(SUBCOMMANDS)} (or %coiled_ingress -h)."
            )
        if args.help:
            print(_SUBCOMMAND_HELP[command] if command else _INGRESS_SHORT_HELP)
            return None
        self._check_options(args, command)
        result = self._ingress_command(command, args, body)
        return result.expanded() if args.verbose else result

    def _ingress_command(self, command, args, body):
        cluster = self._cluster(args)
        with session.kind_for(args.kind, cluster):
            return self._run_command(args, command, body, cluster)

    def _run_command(self, args, command, body, cluster):
        if command is None:
            return self._show(cluster)
        positional = args.words[1:]
        if command in ("add", "remove"):
            if len(positional) != 2:
                raise UsageError(_ports_source_problem(command, positional))
            ports, source = positional
            if command == "add":
                return session.add(
                    ports,
                    source,
                    protocol=args.protocol,
                    description=args.description,
                    cluster=cluster,
                )
            return session.remove(ports, source, protocol=args.protocol, cluster=cluster)
        if command == "set":
            if not body.strip():
                raise UsageError(
                    "%coiled_ingress set needs the rules, e.g. %coiled_ingress set "
                    "[{ports: [8786], cidr: 10.1.0.0/16}]; use clear for no rules."
                )
            where = "the rules of %coiled_ingress set"
            data = substitute_yaml(body, self.shell.user_ns, where)
            return session.set_settings(data, cluster=cluster, label=where)
        if command in ("export", "import"):
            return _export_or_import(command, positional, args, cluster)
        if command == "guard":
            return _guard(positional)
        if positional:
            raise UsageError(
                f"%coiled_ingress {command} takes no arguments but got "
                f"{excerpt(' '.join(positional))}; to name a cluster write --cluster "
                f"{positional[0]}."
            )
        if command == "save":
            return session.save(args.scope or "user", cluster=cluster)
        if command == "ports":
            return session.port_matrix(cluster)
        if command == "undo":
            return session.undo(cluster, apply=args.apply, progress=print)
        if command == "rehearse":
            return session.rehearse(cluster, live=args.live, stop=args.stop, progress=print)
        if command in ("plan", "apply"):
            return getattr(session, command)(
                cluster, progress=print, override_guardrails=_overrides(args)
            )
        if command in ("describe", "destroy"):
            return getattr(session, command)(cluster, progress=print)
        return getattr(session, command)(cluster)

    def _ingress_cell(self, line: str, cell: str):
        parser = self.coiled_ingress.parser
        args = _parse(parser, _split(line))
        if args.help:
            print(_CELL_HELP)
            return None
        if args.words:
            raise UsageError(
                f"the %%coiled_ingress cell takes only --cluster, --kind and --apply on its "
                f"first line, not {excerpt(' '.join(args.words))}; put the rules in the cell "
                "body."
            )
        for name in ("description", "protocol", "scope", "verbose"):
            if getattr(args, name) not in (None, False):
                raise UsageError(
                    f"the %%coiled_ingress cell takes only --cluster and --apply, not "
                    f"{_OPTION_FLAGS[name]}; write it into the rules in the cell body."
                )
        for name in ("live", "stop"):
            if getattr(args, name):
                raise UsageError(
                    f"the %%coiled_ingress cell takes only --cluster and --apply, not "
                    f"{_OPTION_FLAGS[name]}; rehearse on a line: %coiled_ingress rehearse "
                    f"{_OPTION_FLAGS[name]}."
                )
        cell = substitute_yaml(cell, self.shell.user_ns, "the cell")
        cluster = self._cluster(args)
        with session.kind_for(args.kind, cluster):
            if not args.apply:
                return session.set_settings(cell, cluster=cluster, label="the cell")
            return session.set_and_apply(cell, cluster=cluster, progress=print, label="the cell")

    def _check_options(self, args, command):
        what = f"%coiled_ingress {command}" if command else "%coiled_ingress"
        for name, flag in _OPTION_FLAGS.items():
            value = getattr(args, name)
            if value in (None, False) or name in _OPTIONS_OF.get(command, ()):
                continue
            if name == "verbose":
                if command in _SHOWING_SETTINGS:
                    continue
                raise UsageError(
                    f"{what} does not take --verbose; it is for the settings view "
                    "(%coiled_ingress -v), whose details it opens."
                )
            if name == "apply":
                raise UsageError(
                    f"{what} does not take --apply; it is for undo and the %%coiled_ingress "
                    "cell; on a line, run %coiled_ingress apply."
                )
            takers = [c for c, names in _OPTIONS_OF.items() if name in names]
            raise UsageError(f"{what} does not take {flag}; it is for {' and '.join(takers)}.")

    def _cluster(self, args) -> str | None:
        """The cluster named by --cluster, else by %config CoiledMagics.cluster (None: the default).
        An empty --cluster "" stays empty, to be refused, never taken for "the default"."""
        return args.cluster if args.cluster is not None else (self.cluster or None)

    def _show(self, cluster):
        return session.show(cluster, reach=self.show_reachability)

    # ----------------------------------------------------------------------------------------------
    # %coiled_scheduler_ip

    @no_var_expand
    @line_magic
    @magic_arguments()
    @kwds(description=_SCHEDULER_IP_DESCRIPTION)
    @argument(
        "choice", nargs="?", metavar="public|private", help="set it for this session; none shows it"
    )
    @argument("-c", "--cluster", metavar="NAME", help="the cluster (default: CoiledMagics.cluster)")
    @argument("-h", "--help", action="store_true", help="print this help")
    def coiled_scheduler_ip(self, line=""):
        with _usage_errors():
            line = self._substitute(strip_comment(line))
            parser = self.coiled_scheduler_ip.parser
            args = _parse(parser, _split(line))
            if args.help:
                return _print_help(parser)
            cluster = self._cluster(args)
            if args.choice is None:
                return self._show(cluster)
            return session.set_scheduler_ip(args.choice, cluster=cluster)

    # ----------------------------------------------------------------------------------------------
    # %coiled_firewall

    @no_var_expand
    @line_magic
    @magic_arguments()
    @kwds(description=_FIREWALL_DESCRIPTION)
    @argument("-c", "--cluster", metavar="NAME", help="the cluster (default: CoiledMagics.cluster)")
    @argument("-h", "--help", action="store_true", help="print this help")
    def coiled_firewall(self, line=""):
        with _usage_errors():
            line = substitute(strip_comment(line), self.shell.user_ns, "the magic's line")
            parser = self.coiled_firewall.parser
            args = _parse(parser, _split(line))
            if args.help:
                return _print_help(parser)
            # ipywidgets loads here, on first use, not at %load_ext.
            from .widgets import FirewallPanel

            return FirewallPanel(cluster=self._cluster(args))


# --------------------------------------------------------------------------------------------------
# Parsing helpers


def _guard(words: list[str]):
    if not words:
        return session.guardrails()
    if words[0] == "clear":
        if len(words) != 2:
            raise UsageError("%coiled_ingress guard clear takes one guardrail name, or all.")
        return session.clear_guardrail(words[1])
    if len(words) < 2:
        raise UsageError(
            f"%coiled_ingress guard {excerpt(words[0])} needs a value, e.g. %coiled_ingress guard "
            "no-world 8786,8787."
        )
    name = words[0].strip().lower()
    if name not in session.GUARDRAIL_NAMES:
        raise UsageError(
            f"there is no guardrail {excerpt(words[0])}; the guardrails are "
            f"{', '.join(session.GUARDRAIL_NAMES)} (or guard clear NAME)."
        )
    return session.set_guardrails(**{name.replace("-", "_"): words[1:]})


def _overrides(args) -> dict[str, str] | None:
    """--override-guardrail NAME --reason TEXT pairs, in the order given."""
    names, reasons = args.override_guardrail or [], args.reason or []
    if len(names) != len(reasons):
        raise UsageError(
            "give each --override-guardrail NAME its own --reason TEXT saying why, e.g. "
            "--override-guardrail no-world --reason 'vendor debugging until 17:00'."
        )
    return dict(zip(names, reasons)) or None


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment``, so that a cell of magics reads as Python does.

    A ``#`` starts a comment at the start of the line or after whitespace, outside quotes; inside
    quotes (``--description "office #1"``) or a word (``a#b``) it stays. Quotes are read as the
    shell reads them, which is also how YAML reads the flow list of ``set``.
    """
    for index, state in _quote_states(line):
        if state == "" and line[index : index + 1] == "#" and line[index - 1 : index].strip() == "":
            return line[:index].rstrip()
    return line


def _export_or_import(command: str, positional: list[str], args, cluster):
    if command == "export":
        if len(positional) != 1:
            raise UsageError(
                "%coiled_ingress export takes one format (terraform, coiled, csv, markdown or "
                "aws-cli), e.g. %coiled_ingress export terraform --to firewall.tf."
            )
        return session.export_rules(positional[0], cluster=cluster, to=args.to)
    if len(positional) != 2:
        raise UsageError(
            "%coiled_ingress import takes a format and a file, e.g. %coiled_ingress import "
            "terraform firewall.tf."
        )
    return session.import_rules(positional[0], path=positional[1], cluster=cluster)


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        raise UsageError(
            f"the line {excerpt(text.strip())} has a quote that is not closed; close it, or "
            "write the value without quotes."
        ) from None


def _parse(parser, argv: list[str]):
    # Intermixed, so that options may come before, between or after the subcommand's words.
    return parser.parse_intermixed_args(argv)


def _first_word(line: str) -> tuple[str | None, int, int]:
    """The first word that is neither an option nor an option's value, with its position."""
    expect_value = False
    for match in re.finditer(r"\S+", line):
        word = match.group()
        if expect_value:
            expect_value = False
        elif word.startswith("-") and len(word) > 1:
            expect_value = word in _VALUE_OPTIONS
        else:
            return word, match.start(), match.end()
    return None, len(line), len(line)


def _peel_options(body: str) -> tuple[str, list[str]]:
    """``--cluster NAME`` and ``-h`` before or after the YAML text of ``set``; the text stays raw."""
    options: list[str] = []
    text = body
    while True:
        stripped = text.lstrip()
        match = _CLUSTER_OPTION.match(stripped)
        if match:
            options += ["--cluster", match.group(1)]
        else:
            match = _HELP_OPTION.match(stripped)
            if match:
                options.append("--help")
        if not match:
            break
        text = stripped[match.end() :]
    while True:
        match = re.search(r"(?:^|\s)(?:-c|--cluster)(?:=|\s+)(\S+)\s*$", text)
        if match:
            options += ["--cluster", match.group(1)]
        else:
            match = re.search(r"(?:^|\s)(?:-h|--help)\s*$", text)
            if match:
                options.append("--help")
        if not match:
            break
        text = text[: match.start()]
    return text, options


def _ports_source_problem(command: str, positional: list[str]) -> str:
    example = f"%coiled_ingress {command} 8786,8787 10.1.0.0/16"
    if len(positional) < 2:
        got = f"only {excerpt(positional[0])}" if positional else "nothing"
        return f"%coiled_ingress {command} needs PORTS and SOURCE but got {got}; e.g. {example}."
    if any(word.endswith(",") for word in positional[:-1]) or any(
        word.startswith(",") for word in positional[1:]
    ):
        ports = "".join(word for word in positional if word.strip(",").replace(",", "").isdigit())
        return (
            f"%coiled_ingress {command} takes PORTS as one word; write them without spaces, "
            f"e.g. {ports or '8786,8787'!r}."
        )
    extra = " ".join(positional[2:])
    hint = (
        f"; for a description write --description {shlex.quote(extra)}" if command == "add" else ""
    )
    return (
        f"%coiled_ingress {command} takes PORTS and SOURCE but also got {excerpt(extra)}{hint}; "
        f"e.g. {example}."
    )


def _help_text(parser) -> str:
    text = parser.format_help()
    return text.replace("::\n\n  %", "%", 1) if text.startswith("::") else text


def _print_help(parser) -> None:
    # Printed, not paged: nbclient and papermill keep stdout but drop the pager.
    print(_help_text(parser))


# --------------------------------------------------------------------------------------------------
# Tab completion


def _words_before(event) -> tuple[list[str], str]:
    text = event.text_until_cursor
    parts = text.split()
    if text and not text[-1].isspace() and parts:
        return parts[1:-1], parts[-1]
    return parts[1:], ""


_INGRESS_OPTIONS = {
    None: ["--cluster", "--kind", "--verbose", "--help"],
    "add": ["--description", "--protocol", "--cluster", "--kind", "--verbose"],
    "remove": ["--protocol", "--cluster", "--kind", "--verbose"],
    "undo": ["--apply", "--cluster", "--kind"],
    "save": ["--scope", "--cluster", "--kind"],
    "export": ["--to", "--cluster", "--kind"],
    "rehearse": ["--live", "--stop", "--cluster", "--kind"],
    "plan": ["--override-guardrail", "--reason", "--cluster", "--kind"],
    "apply": ["--override-guardrail", "--reason", "--cluster", "--kind"],
}


def complete_ingress(shell, event) -> list[str]:
    """Completions for ``%coiled_ingress``: subcommands, their options and option values."""
    before, current = _words_before(event)
    previous = before[-1] if before else ""
    if previous == "--scope":
        return list(SCOPES)
    if previous in ("-p", "--protocol"):
        return ["tcp", "udp"]
    if previous == "--kind":
        return list(session.KINDS)
    if previous in ("-c", "--cluster"):
        raise TryNext()
    words, skip = [], False
    for word in before:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in _VALUE_OPTIONS
        else:
            words.append(word)
    command = words[0] if words else None
    if current.startswith("-"):
        return _INGRESS_OPTIONS.get(command, ["--cluster", "--kind"])
    if command is None:
        return list(SUBCOMMANDS)
    if command in ("add", "remove") and len(words) == 2:
        return ["me", "everyone"]
    if command in ("export", "import") and len(words) == 1:
        return list(session.EXPORT_FORMATS)
    raise TryNext()


def complete_ingress_cell(shell, event) -> list[str]:
    before, current = _words_before(event)
    if before and before[-1] in ("-c", "--cluster"):
        raise TryNext()
    return ["--cluster", "--kind", "--apply", "--help"]


def complete_scheduler_ip(shell, event) -> list[str]:
    before, current = _words_before(event)
    if before and before[-1] in ("-c", "--cluster"):
        raise TryNext()
    if current.startswith("-"):
        return ["--cluster", "--help"]
    return list(SCHEDULER_IP_WORDS)


_COMPLETERS = (
    ("%coiled_ingress", complete_ingress),
    ("%%coiled_ingress", complete_ingress_cell),
    ("%coiled_scheduler_ip", complete_scheduler_ip),
)
_LINE_MAGICS = ("coiled_ingress", "coiled_scheduler_ip", "coiled_firewall")
_CELL_MAGICS = ("coiled_ingress",)


# --------------------------------------------------------------------------------------------------
# Extension entry points


def load_ipython_extension(ipython) -> None:
    """``%load_ext coiled_jupyter``: register the magics and their tab completion."""
    magics = CoiledMagics(shell=ipython)
    ipython.register_magics(magics)
    for key, completer in _COMPLETERS:
        ipython.set_hook("complete_command", completer, str_key=key)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext coiled_jupyter``: remove the magics, their completion and their %config entry."""
    manager = ipython.magics_manager
    magics = dict.pop(manager.registry, CoiledMagics.__name__, None)
    for kind, names in (("line", _LINE_MAGICS), ("cell", _CELL_MAGICS)):
        table = manager.magics[kind]
        for name in names:
            found = table.get(name)
            if found is not None and getattr(found, "__self__", None) is magics:
                del table[name]
    if magics is not None:
        ipython.configurables[:] = [c for c in ipython.configurables if c is not magics]
        session.use_default_cluster(None)
    dispatcher = ipython.strdispatchers.get("complete_command")
    if dispatcher is not None:
        for key, completer in _COMPLETERS:
            chain = dispatcher.strs.get(key)
            if chain is None:
                continue
            chain.chain = [
                (priority, f)
                for priority, f in chain.chain
                if getattr(f, "__func__", f) is not completer
            ]
            if not chain.chain:
                del dispatcher.strs[key]
