"""The hostile-input suite's bookkeeping: what each surface did with each input, and the checks that
every surface shares (secrets, hangs, memory, widening).

Counted per surface (REST, panel, magics, config files): refusals and acceptances, and the counters
that must stay 0: tracebacks, hangs over 2 s, memory peaks over 200 MB, changes after a refusal,
secrets in any output, error payload or log line, and (port, source) pairs admitted that the input
did not write (tests/widening_oracle.py). conftest prints the totals at the end of the run; each case
fails on its own when one of its zero-counters is not 0.

Every case runs with fake AWS credentials in the environment (``FAKE_CREDENTIALS``), so that a path
that puts a key id, a signature or a session token into a sentence would show here.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import re
import signal
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from widening_oracle import Grant, excess, from_aws, grant

SURFACES = ("REST", "panel", "magics", "config files")
ZERO = ("tracebacks", "hangs", "memory", "changed after refusal", "secrets", "widened")
# ``widened`` counts CIDR blocks per protocol and port range: 0.0.0.0/0 beyond 10.0.0.0/16 is 16.
SECONDS = 2.0
MEGABYTES = 200

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAHOSTILEFAKEKEY01",
    "AWS_SECRET_ACCESS_KEY": "hostileFakeSecretKey/0123456789abcdefghij",
    "AWS_SESSION_TOKEN": "FQoGZXIvYXdzEHostileFakeSessionToken0123456789",
}
SECRETS = re.compile(
    r"(AKIA|ASIA)[0-9A-Z]{16}|Signature=|X-Amz-Security-Token|"
    + "|".join(re.escape(v) for k, v in FAKE_CREDENTIALS.items() if k != "AWS_ACCESS_KEY_ID")
)

CORPUS = yaml.safe_load(Path(__file__).with_name("hostile_corpus.yaml").read_text())


def build(text) -> str | None:
    """A corpus text as written, or built from ``{prefix, repeat, times, suffix}``."""
    if text is None or isinstance(text, str):
        return text
    return text.get("prefix", "") + text["repeat"] * text["times"] + text.get("suffix", "")


# Totals of this test run: TALLY[surface][counter].
TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


@dataclass
class Outcome:
    """What one input did on one surface."""

    surface: str
    refused: bool = False
    message: str = ""
    seconds: float = 0.0
    megabytes: float = 0.0
    tracebacks: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # every output, payload and log line seen
    changed_after_refusal: bool = False
    widened: list[Grant] = field(default_factory=list)
    known: str = ""  # the part fixing this case's known bug (the case is xfail): counted apart

    def counts(self) -> dict[str, int]:
        return {
            "refused": int(self.refused),
            "accepted": int(not self.refused),
            "tracebacks": len(self.tracebacks),
            "hangs": int(self.seconds > SECONDS),
            "memory": int(self.megabytes > MEGABYTES),
            "changed after refusal": int(self.changed_after_refusal),
            "secrets": len(self.secrets()),
            "widened": len(self.widened),
        }

    def secrets(self) -> list[str]:
        return sorted({m.group(0) for text in self.texts for m in SECRETS.finditer(text)})

    def record(self) -> None:
        """Add this outcome to the run's totals, then fail if a zero-counter is not 0."""
        counts = self.counts()
        tally = TALLY[f"{self.surface}, xfail" if self.known else self.surface]
        tally.update(counts)
        tally["cases"] += 1
        bad = {name: counts[name] for name in ZERO if counts[name]}
        assert not bad, (
            f"{self.surface}: {bad}; message {self.message[:300]!r}; tracebacks "
            f"{[t[-800:] for t in self.tracebacks]}; secrets {self.secrets()}; widened "
            f"{[str(g) for g in self.widened[:10]]}; {self.seconds:.2f} s, {self.megabytes:.0f} MB"
        )


def summary() -> list[str]:
    """One line per surface that ran, then the totals."""
    lines = []
    total: collections.Counter = collections.Counter()
    for surface in SURFACES:
        counts = TALLY.get(surface)
        if not counts:
            continue
        total.update(counts)
        lines.append(f"hostile inputs: {surface:12} {_line(counts)}")
    if len(lines) > 1:
        lines.append(f"hostile inputs: {'all':12} {_line(total)}")
    for surface in SURFACES:
        counts = TALLY.get(f"{surface}, xfail")
        if counts:
            lines.append(
                f"known bugs (xfail, strict), not in the totals: {surface}: {counts['cases']} "
                f"cases, {_line(counts)}"
            )
    return lines


def _line(counts: collections.Counter) -> str:
    return (
        f"{counts['refused']} refused / {counts['accepted']} accepted / "
        f"{counts['tracebacks']} tracebacks / {counts['hangs']} hangs over {SECONDS:g} s / "
        f"{counts['memory']} over {MEGABYTES} MB / {counts['changed after refusal']} changed "
        f"after refusal / {counts['secrets']} secrets / {counts['widened']} widened"
    )


@contextlib.contextmanager
def hard_limit(seconds: float) -> Iterator[None]:
    """Stop a case that hangs instead of hanging the suite (the old code ran 150 s on some)."""

    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def timed(outcome: Outcome) -> Iterator[None]:
    """Measure the seconds of the block (counted as a hang over 2 s, never asserted on)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        outcome.seconds = max(outcome.seconds, time.perf_counter() - start)


@contextlib.contextmanager
def traced(outcome: Outcome) -> Iterator[None]:
    """Measure the block's peak of Python memory (tracemalloc slows code, so not while timed)."""
    tracemalloc.start()
    try:
        yield
    finally:
        outcome.megabytes = max(outcome.megabytes, tracemalloc.get_traced_memory()[1] / 1e6)
        tracemalloc.stop()


# --------------------------------------------------------------------------------------------------
# What an input wrote, read without the project's parser


def written_by_fields(ports, source, protocol="tcp") -> list[Grant]:
    """The grants a (ports, source) pair as typed admits by the plainest reading: decimal ports and
    ranges split on commas, one network (``ipaddress``, strict) or ``everyone``. What this reading
    cannot read writes nothing, so that an input the project reads more widely is counted."""
    try:
        intervals = [_interval(p) for p in _port_items(ports)]
        sources = _sources(source)
        protocol = str(protocol).strip().lower()
        return [g for lo, hi in intervals for s in sources for g in grant(protocol, lo, hi, s)]
    except (ValueError, TypeError, AttributeError):
        return []


def _port_items(ports) -> list:
    if isinstance(ports, (list, tuple)):
        return [item for p in ports for item in _port_items(p)]
    if isinstance(ports, str):
        return [p for p in ports.split(",") if p.strip()]
    return [ports]


def _interval(item) -> tuple[int, int]:
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise ValueError(item)
    text = str(item).strip()
    low, _, high = text.partition("-")
    if not (low.strip().isascii() and low.strip().isdigit()):
        raise ValueError(item)
    if high and not (high.strip().isascii() and high.strip().isdigit()):
        raise ValueError(item)
    return int(low), int(high or low)


def _sources(source) -> list[str]:
    if isinstance(source, (list, tuple)):
        return [s for item in source for s in _sources(item)]
    text = str(source).strip()
    if text.lower() == "everyone":
        return ["0.0.0.0/0", "::/0"]
    if text.lower().startswith("sg-") or text.lower() == "me":
        return [text.lower()]
    return [str(ipaddress.ip_network(text))]


def written_by_value(value) -> list[Grant]:
    """Grants of every ``{ports, cidr}`` mapping anywhere inside a YAML/JSON value or text (each
    object once: an alias repeated a billion times is read once)."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except (yaml.YAMLError, RecursionError):
            return []
    found: list[Grant] = []
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen or not isinstance(item, (dict, list)):
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            if "ports" in item and "cidr" in item:
                found += written_by_fields(item["ports"], item["cidr"], item.get("protocol", "tcp"))
            stack.extend(item.values())
        else:
            stack.extend(item)
    return found


def written_by_line(line: str) -> list[Grant]:
    """``add PORTS SOURCE ...`` as typed, or ``set VALUE``; other lines write nothing."""
    words = line.split()
    if len(words) >= 3 and words[0] == "add":
        return written_by_fields(words[1], words[2])
    if words and words[0] == "set":
        return written_by_value(line.split(None, 1)[1] if len(words) > 1 else "")
    return []


# Coiled's documented default when no layer declares an ingress: the scheduler's ports to everyone.
BUILT_IN_DEFAULT = ["tcp 8786-8787 0.0.0.0/0"]


def dask_reads_an_ingress(text: str) -> bool:
    """Does Dask, reading this config file, find ``coiled.backend-options.ingress``? (PyYAML resolves
    merge keys as Dask's loader does; Dask treats ``-`` and ``_`` in keys alike.)"""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return False
    for key in ("coiled", "backend-options", "ingress"):
        if not isinstance(value, dict):
            return False
        found = [v for k, v in value.items() if str(k).replace("_", "-") == key]
        if not found:
            return False
        value = found[-1]
    return value is not None


def cloud_grants(ec2) -> dict[str, list[Grant]]:
    """Every group of the cloud as read with the test's own boto3 client: id -> grants."""
    groups = ec2.describe_security_groups()["SecurityGroups"]
    return {g["GroupId"]: from_aws(g.get("IpPermissions", [])) for g in groups}


def widened_in_cloud(
    before: dict[str, list[Grant]], after: dict[str, list[Grant]], allowed: list[Grant]
) -> list[Grant]:
    """Per group, what it admits now beyond what it admitted before, what was declared before the
    input (``allowed``) and its own self rule (members of the group reach each other)."""
    found: list[Grant] = []
    for group_id, now in after.items():
        own = grant("all", 0, 65535, group_id)
        found += excess(now, [*before.get(group_id, []), *allowed, *own])
    return found
