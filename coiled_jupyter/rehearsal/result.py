"""What a rehearsal found: per source and port, the verdict predicted from the rules and the one measured.

Shown like every other result (``to_payload()``, rendered by :mod:`coiled_jupyter.display`): a row whose
two verdicts differ is marked, and shown in red, since one of them is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..provision.results import _Displayed
from ..provision.target import Target


@dataclass(frozen=True)
class Row:
    """One source and port: what ``reach`` predicts and what a real connection did."""

    source: str
    address: str
    port_name: str
    port: int
    predicted: str
    reason: str
    measured: str
    seconds: float
    detail: str
    probe: str

    @property
    def agree(self) -> bool:
        return self.predicted == self.measured

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "address": self.address,
            "port": f"{self.port} ({self.port_name})",
            "predicted": self.predicted,
            "reason": self.reason,
            "measured": self.measured,
            "time": f"{self.seconds:.3f} s",
            "seconds": round(self.seconds, 4),
            "detail": f"{self.probe}: {self.detail}",
            "agree": self.agree,
        }


@dataclass(frozen=True, repr=False)
class RehearsalResult(_Displayed):
    """A rehearsal (``live=False``: in namespaces on this machine; ``live``: from this notebook to the
    cluster's real address), or, with no rows, the one sentence saying why it could not run."""

    target: Target
    summary: str
    rows: tuple[Row, ...] = ()
    group_id: str | None = None
    live: bool = False
    notes: tuple[str, ...] = ()
    account_id: str = ""

    @property
    def disagreements(self) -> list[Row]:
        return [row for row in self.rows if not row.agree]

    def to_payload(self) -> dict:
        warnings = [
            f"{row.source} ({row.address}) on port {row.port}: predicted {row.predicted}, measured "
            f"{row.measured}; one of them is wrong."
            for row in self.disagreements
            if not self.live
        ]
        return self._payload(
            "rehearsal",
            group_id=self.group_id,
            live=self.live,
            summary=self.summary,
            rows=[row.to_dict() for row in self.rows],
            notes=list(self.notes),
            warnings=warnings,
        )
