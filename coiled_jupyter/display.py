"""Rendering of result objects: text/plain, text/html and ``application/vnd.coiled-jupyter.rules+json``.

All three are built from one JSON payload, so they can never disagree, and the JupyterLab extension's
MIME renderer reads the same payload. The HTML is a plain semantic table that reads well unstyled (GitHub
strips styles); its few colours come only from JupyterLab's ``--jp-*`` variables, with fallbacks.
Everything that came from outside (descriptions, names and ids from AWS, file paths) is escaped.
"""

from __future__ import annotations

from html import escape

MIMETYPE = "application/vnd.coiled-jupyter.rules+json"
SCHEMA_VERSION = 1

_COLUMNS = {
    "rules": [
        ("protocol", "Protocol"),
        ("ports", "Port"),
        ("source", "Source"),
        ("description", "Description"),
        ("origin", "From"),
    ],
    "plan": [
        ("action", "Action"),
        ("protocol", "Protocol"),
        ("ports", "Port"),
        ("source", "Source"),
        ("description", "Description"),
    ],
    "settings": [
        ("protocol", "Protocol"),
        ("ports", "Port"),
        ("source", "Source"),
        ("description", "Description"),
    ],
    "save": [
        ("protocol", "Protocol"),
        ("ports", "Port"),
        ("source", "Source"),
        ("description", "Description"),
    ],
}

_STYLE = """<style>
.cj-result table { border-collapse: collapse; margin: 0.25em 0; }
.cj-result th, .cj-result td { text-align: left; padding: 0.2em 0.8em;
  border-bottom: 1px solid var(--jp-border-color2, #e0e0e0); }
.cj-result th { color: var(--jp-ui-font-color1, inherit); }
.cj-result .cj-meta { color: var(--jp-ui-font-color2, #616161); }
.cj-result .cj-warning { color: var(--jp-warn-color0, #e65100); }
.cj-result tr.cj-add td:first-child { color: var(--jp-success-color0, #2e7d32); }
.cj-result tr.cj-remove td:first-child { color: var(--jp-error-color0, #c62828); }
</style>"""


# --------------------------------------------------------------------------------------------------
# Payload


def _rule_row(rule, **extra) -> dict:
    return {
        "protocol": rule.protocol,
        "ports": rule.ports,
        "source": rule.source,
        "description": rule.description,
        **extra,
    }


def _count(rules) -> str:
    return f"{len(rules)} rule{'' if len(rules) == 1 else 's'}"


def _target(t, **extra) -> dict:
    return {
        "backend": t.backend,
        "backend_label": t.backend_label,
        "region": t.region,
        "cluster": t.cluster,
        "vpc_id": t.vpc_id,
        **extra,
    }


def payload(result) -> dict:
    """The JSON form of any result object."""
    from .provision import core

    if isinstance(result, core.RuleTable):
        rows = [_rule_row(r, origin=o) for r, o in zip(result.rules, result.origins)]
        return {
            "version": SCHEMA_VERSION,
            "kind": "rules",
            **_target(result.target, vpc_id=result.vpc_id or result.target.vpc_id),
            "account": result.account,
            "group_id": result.group_id,
            "group_name": result.group_name,
            "rows": rows,
            "notes": [f"not managed: {u}" for u in result.unmanageable],
            "warnings": list(result.warnings),
        }
    if isinstance(result, core.Plan):
        rows = (
            [_rule_row(r, action="add") for r in result.add]
            + [_rule_row(r, action="remove") for r in result.remove]
            + [_rule_row(r, action="keep") for r in result.keep]
        )
        summary = (
            "no change"
            if not result.changes
            else f"{'create group, ' if result.create else ''}add {len(result.add)}, "
            f"remove {len(result.remove)}, keep {len(result.keep)}"
        )
        return {
            "version": SCHEMA_VERSION,
            "kind": "plan",
            **_target(result.target),
            "account": result.account,
            "group_id": result.group_id,
            "summary": summary,
            "changes": result.changes,
            "declared_in": result.provenance,
            "rows": rows,
            "notes": list(result.notes),
            "warnings": list(result.warnings),
        }
    if isinstance(result, core.ApplyResult):
        table = payload(result.table)
        plan = payload(result.plan)
        return {
            **table,
            "kind": "apply",
            "changed": result.changed,
            "summary": "applied: " + plan["summary"]
            if result.changed
            else "no change: the group already matches the settings",
            "plan": plan,
        }
    if isinstance(result, core.SettingsView):
        return _settings_payload(result)
    if isinstance(result, core.SaveResult):
        toggle = str(result.settings.use_scheduler_public_ip.value).lower()
        readers = (
            "new kernels and coiled.Cluster() read them from this file"
            if result.scope == "user"
            else "everyone in the account gets them unless their Dask config, session or "
            "cluster options say otherwise"
        )
        return {
            "version": SCHEMA_VERSION,
            "kind": "save",
            **_target(result.target),
            "account": "",
            "scope": result.scope,
            "where": result.where,
            "summary": f"saved to {result.where}: ingress ({_count(result.settings.rules)}) and "
            f"use_scheduler_public_ip: {toggle}; {readers}.",
            "rows": [_rule_row(r) for r in result.settings.rules],
            "notes": [],
            "warnings": [],
        }
    if isinstance(result, core.DestroyResult):
        summary = (
            f"deleted group {result.group_id}"
            if result.deleted
            else f"cluster {result.target.cluster!r} has no group to delete"
        )
        return {
            "version": SCHEMA_VERSION,
            "kind": "destroy",
            **_target(result.target),
            "account": result.account,
            "group_id": result.group_id,
            "deleted": result.deleted,
            "summary": summary,
            "rows": [],
            "notes": [],
            "warnings": [],
        }
    if isinstance(result, core.SchedulerAddress):
        kind = "public" if result.public else "private"
        return {
            "version": SCHEMA_VERSION,
            "kind": "scheduler",
            **_target(result.target),
            "account": result.account,
            "instance_id": result.instance_id,
            "ip": result.ip,
            "address": result.address,
            "summary": f"scheduler {result.instance_id}: connect to {result.address} ({kind} IP)",
            "rows": [],
            "notes": [],
            "warnings": [],
        }
    raise TypeError(f"no display for {type(result).__name__}")


def _settings_payload(view) -> dict:
    settings = view.settings
    rows = [_rule_row(r) for r in settings.rules]
    layers = []
    for values in settings.layers:
        sets = []
        if values.ingress is not None:
            sets.append(
                f"ingress ({_count(values.ingress)}"
                f"{', ' + values.ingress_origin if values.ingress_origin else ''})"
            )
        if values.use_scheduler_public_ip is not None:
            sets.append(
                f"use_scheduler_public_ip={values.use_scheduler_public_ip}"
                f"{' (' + values.public_ip_origin + ')' if values.public_ip_origin else ''}"
            )
        layers.append({"layer": values.layer.label, "sets": sets})
    reach = view.reachability.to_dict() if view.reachability is not None else None
    warnings = list(view.reachability.warnings) if view.reachability is not None else []
    public_ip = settings.use_scheduler_public_ip
    return {
        "version": SCHEMA_VERSION,
        "kind": "settings",
        **_target(view.target),
        "account": "",
        "ingress_from": settings.ingress.provenance,
        "use_scheduler_public_ip": public_ip.value,
        "use_scheduler_public_ip_from": public_ip.provenance,
        "rows": rows,
        "layers": layers,
        "reachability": reach,
        "notes": [],
        "warnings": warnings,
    }


# --------------------------------------------------------------------------------------------------
# Text


def _header(data: dict) -> str:
    parts = [
        f"cluster {data['cluster']!r}",
        f"backend {data['backend_label']}",
        f"account {data.get('account') or 'unknown'}",
        f"region {data['region']}",
    ]
    if data.get("vpc_id"):
        parts.append(f"vpc {data['vpc_id']}")
    if data.get("group_id"):
        parts.append(f"group {data['group_id']}")
    return " | ".join(parts)


_TITLES = {
    "rules": "Firewall rules",
    "plan": "Firewall plan",
    "apply": "Firewall applied",
    "settings": "Firewall settings",
    "destroy": "Firewall destroyed",
    "scheduler": "Scheduler address",
    "save": "Firewall settings saved",
}


def _columns(data: dict) -> list[tuple[str, str]]:
    return _COLUMNS.get(data["kind"], _COLUMNS["rules"]) if data["rows"] else []


def _lines_before(data: dict) -> list[str]:
    lines = []
    if data.get("summary"):
        lines.append(data["summary"])
    if data["kind"] == "plan" and data.get("declared_in"):
        lines.append(f"declared in: {data['declared_in']}")
    if data["kind"] == "settings":
        lines.append(f"ingress from: {data['ingress_from']}")
        where = "public" if data["use_scheduler_public_ip"] else "private"
        lines.append(
            f"use_scheduler_public_ip: {str(data['use_scheduler_public_ip']).lower()} "
            f"(client connects on the scheduler's {where} IP; from "
            f"{data['use_scheduler_public_ip_from']})"
        )
    return lines


def _lines_after(data: dict) -> list[str]:
    lines = []
    reach = data.get("reachability")
    if reach:
        for port in (reach["scheduler"], reach["dashboard"]):
            lines.append(
                f"can this notebook reach the {port['name']} (port {port['port']})? "
                f"{port['verdict']}: {port['reason']}"
            )
    for layer in data.get("layers", []):
        lines.append(f"layer {layer['layer']}: {'; '.join(layer['sets']) or 'sets nothing'}")
    lines.extend(f"note: {n}" for n in data.get("notes", []))
    lines.extend(f"warning: {w}" for w in data.get("warnings", []))
    return lines


def text(result) -> str:
    """The text/plain twin: the same header, rows and notes as the HTML."""
    data = payload(result)
    lines = [f"{_TITLES[data['kind']]}: {_header(data)}", *_lines_before(data)]
    columns = _columns(data)
    if columns:
        cells = [[h for _, h in columns]] + [
            [str(row.get(k, "")) for k, _ in columns] for row in data["rows"]
        ]
        widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
        for index, row in enumerate(cells):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
    elif data["kind"] in ("rules", "settings", "apply"):
        lines.append("(no inbound rules)")
    lines.extend(_lines_after(data))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# HTML


def html(result) -> str:
    data = payload(result)
    out = [_STYLE, '<div class="cj-result">']
    columns = _columns(data)
    title = f"<strong>{escape(_TITLES[data['kind']])}</strong>"
    header = f'<p>{title}<br><span class="cj-meta">{escape(_header(data))}</span></p>'
    out.append(header)
    before = _lines_before(data)
    if before:
        out.append("<p>" + "<br>".join(escape(line) for line in before) + "</p>")
    if columns:
        out.append("<table>")
        out.append(
            "<thead><tr>"
            + "".join(f'<th scope="col">{escape(h)}</th>' for _, h in columns)
            + "</tr></thead><tbody>"
        )
        for row in data["rows"]:
            css = f' class="cj-{escape(row["action"])}"' if "action" in row else ""
            out.append(
                f"<tr{css}>"
                + "".join(f"<td>{escape(str(row.get(k, '')))}</td>" for k, _ in columns)
                + "</tr>"
            )
        out.append("</tbody></table>")
    elif data["kind"] in ("rules", "settings", "apply"):
        out.append("<p><em>(no inbound rules)</em></p>")
    after = _lines_after(data)
    if after:
        out.append(
            "<ul>"
            + "".join(
                f'<li class="cj-warning">{escape(line)}</li>'
                if line.startswith("warning:")
                else f"<li>{escape(line)}</li>"
                for line in after
            )
            + "</ul>"
        )
    out.append("</div>")
    return "\n".join(out)


def mimebundle(result) -> dict:
    return {"text/plain": text(result), "text/html": html(result), MIMETYPE: payload(result)}
