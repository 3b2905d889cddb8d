"""The rules each cluster's group held before every apply made from this machine, so it can be undone.

An apply that changes a group appends one record to a JSON Lines file per cluster (backend, region,
VPC and cluster name) in the shared state folder (:func:`coiled_jupyter.state.state_dir`, under
``history/``): when (UTC), the group, whether the apply created it, what it changed, and the rules the
group held before, without its own cluster-internal rule, in the format the Dask config file keeps
(Coiled's, plus ``protocol`` and ``description``). Records are read back through the strict rule
parser, so a damaged file is one sentence naming it, never rules nobody wrote. The newest
:data:`KEPT` records per cluster are kept; the file holds no secrets.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import CoiledJupyterError
from ..rules import IngressError, Rule, parse_ingress, to_coiled
from ..state import lock_name, state_dir
from .target import Target

KEPT = 50


@dataclass(frozen=True)
class Entry:
    """One apply as this machine recorded it: ``before`` is the group's rules before it (its own
    cluster-internal rule aside), ``created`` whether the apply created the group."""

    at: str
    group_id: str
    created: bool
    before: tuple[Rule, ...]
    changes: tuple[str, ...]

    @property
    def when(self) -> str:
        """``2026-12-07 23:41:07 UTC``, as tables show a time."""
        return self.at.replace("T", " ").removesuffix("Z") + " UTC"


def path(t: Target) -> Path:
    """The history file of ``t``'s cluster."""
    name = Path(lock_name(t.backend, t.region, t.vpc_id, t.cluster)).with_suffix(".jsonl")
    return state_dir() / "history" / name


def changes(plan) -> tuple[str, ...]:
    """What ``plan`` changes, one phrase per rule: ``add tcp 8786 from 10.1.0.0/16``."""
    return (
        *(("create group",) if plan.create else ()),
        *(f"add {r}" for r in plan.add),
        *(f"remove {r}" for r in plan.remove),
        *(f"describe {r} as {r.description!r}" for r in plan.update),
    )


def record(t: Target, group, group_id: str, plan) -> str | None:
    """Append what ``group`` (None: the apply created ``group_id``) held before ``plan`` was carried
    out; keep the newest :data:`KEPT`. Returns a warning when the record could not be written: the
    apply itself has happened, so that is said, not raised."""
    before = [r for r in group.rules if r.source != group.group_id] if group is not None else []
    entry = {
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "group_id": group_id,
        "created": group is None,
        "before": to_coiled(before),
        "changes": list(changes(plan)),
    }
    try:
        file = path(t)
        file.parent.mkdir(parents=True, exist_ok=True)
        lines = file.read_text(encoding="utf-8").splitlines() if file.exists() else []
        lines = [*lines, json.dumps(entry)][-KEPT:]
        handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=".history-")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        os.replace(temporary, file)
    except (OSError, CoiledJupyterError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        return (
            f"the rules before this apply could not be kept for undo ({reason}); "
            "%coiled_ingress history does not list this apply."
        )
    return None


def entries(t: Target) -> list[Entry]:
    """The recorded applies of ``t``'s cluster, newest first ([] when there are none)."""
    file = path(t)
    try:
        text = file.read_text(encoding="utf-8") if file.exists() else ""
    except (OSError, UnicodeDecodeError) as error:
        raise CoiledJupyterError(
            _damaged(file, getattr(error, "strerror", None) or error)
        ) from None
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            data = json.loads(line)
            found.append(
                Entry(
                    str(data["at"]),
                    str(data["group_id"]),
                    bool(data["created"]),
                    tuple(parse_ingress(data["before"], where=f"line {number} of {file}")),
                    tuple(str(c) for c in data["changes"]),
                )
            )
        except (ValueError, KeyError, TypeError, IngressError) as error:
            raise CoiledJupyterError(_damaged(file, f"line {number}: {error}")) from None
    return found[::-1]


def _damaged(file: Path, reason) -> str:
    return (
        f"the apply history {file} cannot be read ({reason}); move it away to start a new one "
        "(undo then knows no earlier rules)."
    )
