"""Copy-as-cell: the one ``%%coiled_ingress`` cell that reproduces a cluster's settings.

The panel, the sidebar and the lab's palette all offer the text made here; it travels in the settings
payload (``copy_as_cell``), so no front end writes its own. The cell never applies (no ``--apply``):
running it sets the same rules and ``use_scheduler_public_ip`` in that kernel's session for the named
cluster, and the person applies when they choose. Its body is a ``coiled:`` snippet in Coiled's format
whose ``ingress`` is the rule list.

Written for the reader that reads it back (:mod:`.strict_yaml` inside the cell magic): a value is
written plain only when that reader gives back the same string, otherwise JSON-quoted (a description
``1e5``, ``true``, ``null`` or ``0x10`` would be a number, a boolean, nothing or a refusal); and every
``$`` is doubled, since the cell magic replaces ``${name}`` by a notebook variable.
"""

from __future__ import annotations

import json
import shlex

from .rules import to_coiled
from .strict_yaml import StrictYAMLError, load


def _scalar(value) -> str:
    """``value`` as a YAML flow scalar that reads back as exactly ``value``."""
    if isinstance(value, bool) or not isinstance(value, str):
        return json.dumps(value)
    try:
        reads_back = load(f"[{value}]", "a value") == [value]
    except StrictYAMLError:
        reads_back = False
    return value if reads_back else json.dumps(value, ensure_ascii=False)


def _rule(item: dict) -> str:
    fields = [f"ports: [{', '.join(_scalar(port) for port in item['ports'])}]"]
    fields += [
        f"{key}: {_scalar(item[key])}" for key in ("cidr", "protocol", "description") if key in item
    ]
    return "{" + ", ".join(fields) + "}"


def ingress_cell(cluster: str, rules, use_scheduler_public_ip: bool) -> str:
    """The ``%%coiled_ingress --cluster NAME`` cell that sets these settings (and does not apply)."""
    items = to_coiled(rules)
    lines = [
        f"%%coiled_ingress --cluster {shlex.quote(cluster)}",
        "coiled:",
        f"  use_scheduler_public_ip: {'true' if use_scheduler_public_ip else 'false'}",
        "  backend-options:",
        "    ingress:" if items else "    ingress: []",
        *(f"    - {_rule(item)}" for item in items),
    ]
    return "\n".join(lines).replace("$", "$$")
