"""Rendering of payloads: text/plain, text/html and ``application/vnd.coiled-jupyter.rules+json``.

Every result object makes its own JSON payload (``to_payload()``); this module renders payloads only and
knows no result type, so all three forms come from one payload and can never disagree, and the
JupyterLab extension's MIME renderer reads the same payload. The HTML is a plain semantic table that
reads well unstyled (GitHub strips styles); its few colours come only from JupyterLab's ``--jp-*``
variables, with fallbacks. Everything that came from outside (descriptions, names and ids from AWS,
file paths) is escaped.
"""

from __future__ import annotations

from html import escape

MIMETYPE = "application/vnd.coiled-jupyter.rules+json"

_COLUMNS = {
    "rules": [
        ("protocol", "Protocol"),
        ("ports", "Port"),
        ("source", "Source"),
        ("description", "Description"),
        ("origin", "Origin"),
    ],
    "plan": [
        ("action", "Action"),
        ("protocol", "Protocol"),
        ("ports", "Port"),
        ("source", "Source"),
        ("description", "Description"),
        ("previous_description", "Was"),
        ("origin", "Origin"),
    ],
    "settings": [
        ("protocol", "Protocol"),
        ("ports", "Port"),
        ("source", "Source"),
        ("description", "Description"),
    ],
    "ports": [
        ("ports", "Port"),
        ("use", "Used by"),
        ("needed", "Needed"),
        ("admitted", "Admitted"),
        ("from", "From"),
    ],
    "guardrails": [
        ("guardrail", "Guardrail"),
        ("rule", "Rule"),
        ("set_by", "Set by"),
        ("set_at", "Set at"),
    ],
    "history": [("at", "When"), ("changes", "Changed"), ("before", "Before")],
    "save": [
        ("protocol", "Protocol"),
        ("ports", "Port"),
        ("source", "Source"),
        ("description", "Description"),
    ],
    "rehearsal": [
        ("source", "Source"),
        ("address", "Address"),
        ("port", "Port"),
        ("predicted", "Predicted"),
        ("measured", "Measured"),
        ("time", "Time"),
        ("detail", "What happened"),
    ],
}

# The sandbox marker's pill: the lab's renderer and sidebar draw it with the same --jp-* colours.
_PILL = (
    "background: var(--jp-warn-color3, #fff3e0); color: var(--jp-warn-color0, #e65100); "
    "border: 1px solid var(--jp-warn-color1, #f57c00); border-radius: 2px; padding: 0 4px; "
    "font-weight: 600"
)

# The class is named twice in the cell rule to outrank JupyterLab's own output-table rule
# (`:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td`), which right-aligns cells and drops borders.
_STYLE = (
    """<style>
.cj-result table { border-collapse: collapse; margin: 0.25em 0; }
.cj-result.cj-result th, .cj-result.cj-result td { text-align: left; padding: 0.2em 0.8em;
  border-bottom: 1px solid var(--jp-border-color2, #e0e0e0); }
.cj-result th { color: var(--jp-ui-font-color1, inherit); }
.cj-result .cj-meta { color: var(--jp-ui-font-color2, #616161); }
.cj-result .cj-warning { color: var(--jp-warn-color0, #e65100); }
.cj-result code { background: var(--jp-layout-color2, #eeeeee); padding: 0 0.2em; }
.cj-result summary { cursor: pointer; color: var(--jp-ui-font-color2, #616161); }
.cj-result tr.cj-add td:first-child { color: var(--jp-success-color0, #2e7d32); }
.cj-result tr.cj-remove td:first-child { color: var(--jp-error-color0, #c62828); }
.cj-result tr.cj-update td:first-child { color: var(--jp-warn-color0, #e65100); }
.cj-result tr.cj-disagree td { color: var(--jp-error-color0, #c62828); font-weight: bold; }
"""
    + f".cj-result .cj-sandbox-badge {{ {_PILL}; }}\n</style>"
)


# --------------------------------------------------------------------------------------------------
# Text


def sandbox_pill(data: dict, *, inline: bool = False) -> str:
    """The payload's sandbox marker as an HTML pill ('' for a real backend). The tables style it from
    their stylesheet; the panel, whose HTML widgets take no stylesheet, asks for ``inline``."""
    marker = data.get("backend_marker")
    if not marker:
        return ""
    style = f' style="{_PILL}"' if inline else ""
    return f'<span class="cj-sandbox-badge"{style}>{escape(marker)}</span>'


def _header_parts(data: dict) -> list[str]:
    backend = "sandbox" if data.get("backend_marker") else data["backend_label"]
    parts = [
        f"cluster {data['cluster']!r}",
        f"backend {backend}",
        f"account {data.get('account_id') or 'unknown'}",
        f"region {data['region']}",
    ]
    if data.get("vpc_id"):
        parts.append(f"vpc {data['vpc_id']}")
    if data.get("group_id"):
        parts.append(f"group {data['group_id']}")
    return parts


def _header(data: dict) -> str:
    marker = f" [{data['backend_marker']}]" if data.get("backend_marker") else ""
    return " | ".join(_header_parts(data)) + marker


_TITLES = {
    "rules": "Firewall rules",
    "plan": "Firewall plan",
    "apply": "Firewall applied",
    "settings": "Firewall settings",
    "destroy": "Firewall destroyed",
    "scheduler": "Scheduler address",
    "save": "Firewall settings saved",
    "ports": "Ports",
    "history": "Firewall history",
    "rehearsal": "Firewall rehearsal",
    "export": "Firewall export",
    "guardrails": "Team guardrails",
}


# Shown only when some row has a value: a plan's old descriptions (updates) and who wrote a removed rule.
_OPTIONAL = {"previous_description", "origin"}


def _columns(data: dict) -> list[tuple[str, str]]:
    rows = data["rows"]
    columns = _COLUMNS.get(data["kind"], _COLUMNS["rules"]) if rows else []
    if data["kind"] != "plan":
        return columns
    return [c for c in columns if c[0] not in _OPTIONAL or any(r.get(c[0]) for r in rows)]


def _lines_before(data: dict) -> list[str]:
    lines = []
    if data.get("summary"):
        lines.append(data["summary"])
    if data.get("ports"):
        lines.append(f"ports assumed: {data['ports']['summary']}")
    if data["kind"] == "plan" and data.get("origin"):
        lines.append(f"rules from: {data['origin']}")
    if data["kind"] == "settings":
        lines.append(
            f"rules from: {data['ingress_origin']}; use_scheduler_public_ip: "
            f"{str(data['use_scheduler_public_ip']).lower()} "
            f"(from {data['use_scheduler_public_ip_origin']})"
        )
        others = [name for name in data.get("session_clusters", []) if name != data["cluster"]]
        if others:
            lines.append(
                f"session settings (kept per cluster) also for: {', '.join(others)}; "
                "none of them applies to this cluster"
            )
    return lines


def _lines_after(data: dict) -> list[str]:
    """The lines under the table. A payload with ``details`` (the settings view) shows its verdict
    line and warnings here, and the rest in its collapsed details."""
    if "details" in data:
        verdict = [data["verdict"]] if data.get("verdict") else []
        return verdict + [f"warning: {w}" for w in data.get("warnings", [])]
    return [
        *(f"note: {n}" for n in data.get("notes", [])),
        *(f"warning: {w}" for w in data.get("warnings", [])),
    ]


def _command_lines(data: dict) -> list[str]:
    """Each suggested command on its own line, what it does as a comment: pasted whole, it runs."""
    return [f"  {c['command']}  # {c['does']}" for c in data.get("commands", [])]


def text(data: dict) -> str:
    """The text/plain twin of a payload: the same header, rows and notes as the HTML; the settings
    view's details only when it is verbose (else one line naming the command that shows them)."""
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
    if data.get("body"):
        lines.append(data["body"].rstrip("\n"))
    lines.extend(_lines_after(data))
    lines.extend(_command_lines(data))
    if data.get("details"):
        if data.get("verbose"):
            lines.extend(["why:", *(f"  {line}" for line in data["details"])])
        else:
            lines.append(f"why, layers and notes: %coiled_ingress -v --cluster {data['cluster']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# HTML


def html(data: dict) -> str:
    """A semantic table that reads well unstyled, everything from outside escaped."""
    out = [_STYLE, '<div class="cj-result">']
    columns = _columns(data)
    title = f"<strong>{escape(_TITLES[data['kind']])}</strong>"
    meta = escape(" | ".join(_header_parts(data)))
    pill = sandbox_pill(data)
    header = f'<p>{title}<br><span class="cj-meta">{meta}</span>{" " + pill if pill else ""}</p>'
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
            if row.get("agree") is False:
                css = ' class="cj-disagree"'
            out.append(
                f"<tr{css}>"
                + "".join(f"<td>{escape(str(row.get(k, '')))}</td>" for k, _ in columns)
                + "</tr>"
            )
        out.append("</tbody></table>")
    elif data["kind"] in ("rules", "settings", "apply"):
        out.append("<p><em>(no inbound rules)</em></p>")
    if data.get("body"):
        out.append(f'<pre class="cj-body">{escape(data["body"])}</pre>')
    after = _lines_after(data)
    if after:
        out.append(_html_list(after))
    if data.get("commands"):
        out.append(
            '<ul class="cj-commands">'
            + "".join(
                f"<li><code>{escape(c['command'])}</code> {escape(c['does'])}</li>"
                for c in data["commands"]
            )
            + "</ul>"
        )
    if data.get("details"):
        opened = " open" if data.get("verbose") else ""
        out.append(
            f"<details{opened}><summary>Why, layers and notes</summary>"
            + _html_list(data["details"])
            + "</details>"
        )
    out.append("</div>")
    return "\n".join(out)


def _html_list(lines: list[str]) -> str:
    return (
        "<ul>"
        + "".join(
            f'<li class="cj-warning">{escape(line)}</li>'
            if line.startswith("warning:")
            else f"<li>{escape(line)}</li>"
            for line in lines
        )
        + "</ul>"
    )


def mimebundle(data: dict) -> dict:
    """Every representation of one payload, for ``_repr_mimebundle_`` and ``display()``."""
    return {"text/plain": text(data), "text/html": html(data), MIMETYPE: data}
