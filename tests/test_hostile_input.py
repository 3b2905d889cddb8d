"""Hostile and broken input through the magics, the panel and config files: every input ends in a
result or the project's own one sentence, within 2 s and 200 MB; a refusal changes nothing; no
secret shows; and what an accepted input leaves admitted is no wider than what was admitted before
plus what the input wrote (tests/widening_oracle.py). The REST surface is tests/server/
test_hostile_rest.py. Counted per surface by tests/hostile.py and printed at the end of the run.

The cases live in ``hostile_corpus.yaml`` next to this file (add one for every bug found); hypothesis
adds random lines and cells. Checked after each input: the session's effective rules, the Dask config
file's bytes and every group of the cloud with its rules, read by a client of the test's own. The
cloud is the sandbox reached as AWS (``aws_backend_on_sandbox``) with fake keys in the environment,
so that a key id, a signature or a session token in any output would be found.
"""

from __future__ import annotations

import itertools
import json
import logging
import traceback

import pytest
import yaml
from hostile import (
    BUILT_IN_DEFAULT,
    CORPUS,
    FAKE_CREDENTIALS,
    Outcome,
    build,
    cloud_grants,
    dask_reads_an_ingress,
    hard_limit,
    timed,
    traced,
    widened_in_cloud,
    written_by_fields,
    written_by_line,
    written_by_value,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from widening_oracle import excess, grants

from coiled_jupyter import session
from coiled_jupyter.errors import CoiledJupyterError
from coiled_jupyter.settings import SESSION

CASES = CORPUS["cases"]
CONFIG_TEXT = (
    "coiled:\n  backend-options:\n    ingress:\n      - ports: [8786]\n        cidr: 10.3.0.0/16\n"
)
START = [{"ports": [8786, 8787], "cidr": "10.1.0.0/16"}]
CLUSTERS = (None, "other")


def marks(case: dict) -> list:
    """``xfail: PART`` in the corpus: a known bug that part PART is fixing (strict: it must fail)."""
    if case.get("xfail"):
        return [pytest.mark.xfail(strict=True, reason=f"fixed by part {case['xfail']}")]
    return []


@pytest.fixture
def world(aws_backend_on_sandbox, cloud, dask_config, monkeypatch, caplog):
    """The cloud as AWS with fake keys, a Dask config file of the test's own, every log line kept."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    (dask_config / "coiled.yaml").write_text(CONFIG_TEXT)
    caplog.set_level(logging.INFO)
    return cloud


@pytest.fixture
def ip(ip, world):
    """conftest's shell, over the world above."""
    return ip


class State:
    """Everything an input may change, read independently of the code under test where it can be:
    the session layer, the config file's bytes, every group of the cloud; and the session's
    effective rules per cluster (what the next apply would send)."""

    def __init__(self, cloud, dask_config):
        self.values = SESSION.values
        self.file = (dask_config / "coiled.yaml").read_bytes()
        self.cloud = cloud_grants(cloud.ec2)
        self.groups = json.dumps(
            sorted(
                [g["GroupId"], g.get("IpPermissions", [])]
                for g in cloud.ec2.describe_security_groups()["SecurityGroups"]
            ),
            sort_keys=True,
        )
        self.effective = {}
        for cluster in CLUSTERS:
            try:
                self.effective[cluster] = grants(session.show(cluster).settings.rules)
            except CoiledJupyterError:
                self.effective[cluster] = None  # unreadable: nothing is admitted from here

    def same(self, other: State) -> bool:
        return (self.values, self.file, self.groups) == (other.values, other.file, other.groups)


def judge(outcome: Outcome, before: State, after: State, written, caplog) -> None:
    """Fill in what only the states tell: a change after a refusal, widening, the log lines.
    ``written()`` reads what the input wrote, only for an accepted input."""
    outcome.texts += [record.getMessage() for record in caplog.records]
    outcome.texts += [
        "".join(traceback.format_exception(record.exc_info[1]))
        for record in caplog.records
        if record.exc_info
    ]
    if outcome.refused:
        outcome.changed_after_refusal = not before.same(after)
        return
    declared = [g for grants in before.effective.values() if grants for g in grants]
    allowed = [*declared, *written()]
    for now in after.effective.values():
        if now is not None:
            outcome.widened += excess(now, allowed)
    outcome.widened += widened_in_cloud(before.cloud, after.cloud, allowed)


# --------------------------------------------------------------------------------------------------
# Magics


def run_magic(ip, case: dict, text: str, outcome: Outcome) -> None:
    with capture_output() as captured:
        try:
            with hard_limit(30):
                if case["kind"] == "line":
                    ip.run_line_magic("coiled_ingress", text)
                else:
                    ip.run_cell_magic("coiled_ingress", case.get("line", ""), text)
        except UsageError as error:
            outcome.refused, outcome.message = True, str(error)
        except Exception as error:  # noqa: BLE001 - a traceback is what is counted here
            outcome.tracebacks.append("".join(traceback.format_exception(error)))
    outcome.texts += [outcome.message, captured.stdout, captured.stderr]
    outcome.texts += [json.dumps(o.data, default=str) for o in captured.outputs]
    if "Traceback (most recent call last)" in captured.stdout + captured.stderr:
        outcome.tracebacks.append(captured.stdout + captured.stderr)


def magic_written(case: dict, text: str) -> list:
    written = [*(case.get("writes") or [])]
    if case["kind"] == "line":
        written += written_by_line(text)
    else:
        written += written_by_value(text)
    return written


def run_magic_case(ip, cloud, dask_config, caplog, case: dict, text: str) -> Outcome:
    """One input, twice: timed, then under tracemalloc (which slows pure-Python code several times,
    so it would distort the time). After a refusal (which changed nothing) the second run must end
    the same way; after an acceptance it may not (``remove`` removes once)."""
    ip.user_ns.update(case.get("variables") or {})
    before = State(cloud, dask_config)
    outcome = Outcome("magics")
    with timed(outcome):
        run_magic(ip, case, text, outcome)
    again = Outcome("magics")
    with traced(outcome):
        run_magic(ip, case, text, again)
    if outcome.refused:
        assert (again.refused, again.message) == (outcome.refused, outcome.message)
    outcome.tracebacks += again.tracebacks
    outcome.texts += again.texts
    judge(outcome, before, State(cloud, dask_config), lambda: magic_written(case, text), caplog)
    return outcome


@pytest.mark.parametrize("case", [pytest.param(c, id=c["name"], marks=marks(c)) for c in CASES])
def test_corpus_case(ip, world, dask_config, caplog, case):
    ip.run_line_magic("coiled_ingress", "apply")  # the default cluster has a group to lose
    session.set_settings(START)
    outcome = run_magic_case(ip, world, dask_config, caplog, case, build(case["text"]))
    outcome.known = case.get("xfail") or ""
    outcome.record()
    assert outcome.refused == (case["expect"] == "refused"), outcome.message
    if outcome.refused:
        assert len(outcome.message) < 600 and outcome.message.count("\n") <= 2, outcome.message
        assert case.get("says", "") in outcome.message


_YAMLISH = st.text(
    alphabet=st.sampled_from(list("[]{},:-&*!|>'\"#%@` \n\t0123456789abcdefxyz./_$") + ["\x07"]),
    max_size=300,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(_YAMLISH, st.text(max_size=200)), kind=st.sampled_from(["cell", "set", "add"])
)
def test_random_input_ends_in_a_result_or_one_sentence(ip, world, dask_config, caplog, body, kind):
    session.set_settings([{"ports": [8786], "cidr": "10.1.0.0/16"}])
    caplog.clear()
    ip.user_ns["v"] = body
    if kind == "cell":
        case = {"kind": "cell", "text": body.replace("$", "$$")}
    elif kind == "set":
        case = {"kind": "line", "text": "set " + body.replace("$", "$$").replace("\n", " ")}
    else:
        case = {"kind": "line", "text": "add ${v} ${v}", "writes": written_by_fields(body, body)}
    outcome = run_magic_case(ip, world, dask_config, caplog, case, case["text"])
    outcome.record()
    if outcome.refused:
        assert outcome.message.strip()


# --------------------------------------------------------------------------------------------------
# Fields a person types into the panel or a config file: each hostile value beside valid others

FIELDS = CORPUS["fields"]
VALID = {"ports": "8786", "source": "10.9.0.0/16", "description": "hostile suite"}


def field_cases() -> list[dict]:
    cases = []
    for name, values in FIELDS.items():
        for index, value in enumerate(values):
            cases.append({"name": f"{name}-{index}", **VALID, name: value})
    return cases


FIELD_CASES = field_cases()


def find(widget, label: str):
    found = []
    stack = [widget]
    while stack:
        item = stack.pop()
        labels = {getattr(item, n, None) for n in ("description", "placeholder", "tooltip")}
        if label in labels:
            found.append(item)
        stack.extend(getattr(item, "children", ()))
    return found


def panel_texts(panel) -> list[str]:
    texts = [panel.status.value, panel.cell.value, panel.marker.value]
    texts += [row.message.value for row in panel.rows]
    texts += [json.dumps(o, default=str) for o in panel.output.outputs]
    return texts


@pytest.fixture
def panel_warmed(world):
    """One panel made, typed into and closed before a case is timed: what the first panel of a
    process loads once (ipywidgets, the comm machinery, lazy imports of the core) is no hang of
    the input's."""
    from coiled_jupyter.widgets import FirewallPanel

    panel = FirewallPanel(background=False)
    row = panel.add_row()
    row.ports.value, row.source.value = "8786", "10.0.0.0/8"
    row.check()
    panel.close()
    session.reset()


@pytest.mark.parametrize("case", FIELD_CASES, ids=[c["name"] for c in FIELD_CASES])
def test_panel_field(world, panel_warmed, dask_config, caplog, case):
    """Type one row into the panel, as the browser would (``.value``), then press Apply."""
    from coiled_jupyter.widgets import FirewallPanel

    session.set_settings(START)
    before = State(world, dask_config)
    outcome = Outcome("panel")
    panel = FirewallPanel(background=False)
    try:
        with timed(outcome), hard_limit(30):
            row = panel.add_row()
            # The field under test last, so that no edit before it is sent with a value left out.
            row.description.value = str(case["description"])
            row.ports.value = str(case["ports"])
            row.source.value = str(case["source"])
        with traced(outcome), hard_limit(30):
            row.check()
        if not row.problems:
            with hard_limit(60):
                panel.apply()  # what was accepted reaches the cloud (its time is not the input's)
    finally:
        panel.close()
    texts = panel_texts(panel)
    outcome.texts += texts
    outcome.refused = bool(row.problems) or not panel.valid
    outcome.message = " ".join(row.problems) or panel.status.value
    if "unexpected" in panel.status.value or any("Traceback" in t for t in texts):
        outcome.tracebacks.append(" ".join(texts))
    written = written_by_fields(case["ports"], case["source"])
    judge(outcome, before, State(world, dask_config), lambda: written, caplog)
    outcome.record()


def config_text(case: dict) -> str:
    item = {"ports": case["ports"], "cidr": case["source"], "description": case["description"]}
    return yaml.safe_dump({"coiled": {"backend-options": {"ingress": [item]}}})


CONFIG_CASES = [
    *({"name": c["name"], "text": config_text(c), "writes": c} for c in FIELD_CASES),
    *(
        {"name": c["name"], "text": build(c["text"]), "xfail": c.get("xfail")}
        for c in CORPUS["config_files"]
    ),
]


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c["name"], marks=marks(c)) for c in CONFIG_CASES]
)
def test_config_file(world, dask_config, caplog, case):
    """A coiled.yaml in the test's own DASK_CONFIG folder, then what a notebook does with it: show
    the settings and apply them."""
    ip_file = dask_config / "coiled.yaml"
    before = State(world, dask_config)
    outcome = Outcome("config files", known=case.get("xfail") or "")
    ip_file.write_bytes(case["text"].encode(case.get("encoding") or "utf-8"))
    with capture_output() as captured:
        try:
            with timed(outcome), hard_limit(30):
                view = session.show()
            with traced(outcome), hard_limit(30):
                session.show()
            outcome.texts.append(repr(view))
        except CoiledJupyterError as error:
            outcome.refused, outcome.message = True, str(error)
            outcome.texts.append(outcome.message)
        except Exception as error:  # noqa: BLE001 - a traceback is what is counted here
            outcome.tracebacks.append("".join(traceback.format_exception(error)))
        if not outcome.refused and not outcome.tracebacks:
            try:
                with hard_limit(60):  # what was accepted reaches the cloud
                    outcome.texts.append(repr(session.apply()))
            except CoiledJupyterError as error:
                outcome.texts.append(str(error))
            except Exception as error:  # noqa: BLE001
                outcome.tracebacks.append("".join(traceback.format_exception(error)))
    outcome.texts += [captured.stdout, captured.stderr]
    after = State(world, dask_config)
    after.file = before.file = b""  # the file is the input itself
    fields = case.get("writes")
    if outcome.refused:
        outcome.changed_after_refusal = (before.values, before.groups) != (
            after.values,
            after.groups,
        )
        outcome.texts += [r.getMessage() for r in caplog.records]
    else:
        # The file replaces the one the state before was read from: only it is declared.
        written = (
            written_by_fields(fields["ports"], fields["source"])
            if fields
            else written_by_value(case["text"])
        )
        if not dask_reads_an_ingress(case["text"]):
            written += grants(BUILT_IN_DEFAULT)  # nothing declared: Coiled's default applies
        outcome.widened += widened_in_cloud(before.cloud, after.cloud, written)
        outcome.texts += [r.getMessage() for r in caplog.records]
    outcome.record()


def test_every_surface_is_exercised_by_valid_and_hostile_inputs():
    """The corpus keeps a control that is accepted and hostile values that are refused."""
    assert any(c["expect"] == "result" for c in CASES)
    assert any(c["expect"] == "refused" for c in CASES)
    assert all(FIELDS[name] for name in ("ports", "source", "description"))
    assert list(itertools.chain(CORPUS["config_files"]))
