"""The firewall panel driven from Python, without a browser, against the sandbox (a moto server).

Controls are found by their own labels (description, placeholder or tooltip), as a person or a screen
reader finds them, and driven as the browser would: ``.value`` for typing, ``.click()`` for buttons.
What the panel did is read back independently: the session through the magics, the Dask config file
from disk, the security group through the ``cloud`` fixture's own boto3 clients.
"""

from __future__ import annotations

import html
import re
import socket

import dask.config
import ipywidgets
import pytest
from IPython.core.error import UsageError

from coiled_jupyter import widgets as panel_module
from coiled_jupyter.display import MIMETYPE
from coiled_jupyter.settings import SESSION
from coiled_jupyter.widgets import FirewallPanel

BUTTONS = ("Plan", "Apply", "Save to my config", "Save as team default", "Revert")
SOURCE = "source (CIDR, address, me, everyone)"


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def open_panel(dask_config, sandbox):
    """``open_panel(cluster=None)``: a panel on a clean sandbox that runs its operations in the
    test's thread."""
    opened: list[FirewallPanel] = []

    def make(cluster=None, **kwargs) -> FirewallPanel:
        kwargs.setdefault("background", False)
        made = FirewallPanel(cluster=cluster, **kwargs)
        opened.append(made)
        return made

    yield make
    for made in opened:
        made.wait(30)
        made.close()


def descendants(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from descendants(child)


def labels_of(widget) -> set[str]:
    return {
        value
        for name in ("description", "placeholder", "tooltip")
        if isinstance(value := getattr(widget, name, None), str) and value
    }


def find_all(widget, label: str) -> list:
    """Every control under ``widget`` that carries ``label``, in the order they are shown."""
    return [w for w in descendants(widget) if label in labels_of(w)]


def find(widget, label: str):
    found = find_all(widget, label)
    assert len(found) == 1, f"{len(found)} controls labelled {label!r}"
    return found[0]


def row_boxes(panel) -> list:
    """The rule rows as shown: a line with one ports field, and the line of its sentences."""
    return [
        box
        for box in descendants(panel)
        if len(getattr(box, "children", ())) == 2
        and isinstance(box.children[1], ipywidgets.HTML)
        and len(find_all(box.children[0], "ports")) == 1
    ]


def fill(row, ports=None, source=None, description=None, protocol=None) -> None:
    for label, value in (
        ("ports", ports),
        (SOURCE, source),
        ("description", description),
        ("protocol", protocol),
    ):
        if value is not None:
            find(row, label).value = value


def last_row(panel):
    return row_boxes(panel)[-1]


def shown(panel) -> dict:
    """The core result in the panel's result area, as its JSON payload and its HTML."""
    outputs = panel.output.outputs
    assert len(outputs) == 1
    data = outputs[0]["data"]
    return {"payload": data[MIMETYPE], "html": data["text/html"]}


def rows_as_text(panel) -> list[tuple[str, str, str, str]]:
    return [
        (
            find(row, "ports").value,
            find(row, SOURCE).value,
            find(row, "protocol").value,
            find(row, "description").value,
        )
        for row in row_boxes(panel)
    ]


def session_rules(cluster: str | None = None) -> list[tuple[str, str, str]] | None:
    """The session's rules for ``cluster`` (None: the default cluster), None when it sets none."""
    values = SESSION.of(cluster)
    if values.ingress is None:
        return None
    return [(r.protocol, r.ports, r.source) for r in values.ingress]


def status(panel) -> str:
    """The status line as read: its text without the markup."""
    return html.unescape(re.sub(r"<[^>]*>", "", panel.status.value))


# --------------------------------------------------------------------------------------------------
# Opening


def test_every_control_carries_its_own_label(open_panel):
    panel = open_panel()
    for label in (*BUTTONS, "Add rule", "scheduler IP", "Copy as %%coiled_ingress cell"):
        find(panel, label)
    row = last_row(panel)
    for label in ("ports", SOURCE, "protocol", "description", "Remove"):
        find(row, label)


def test_opens_on_the_effective_settings(open_panel):
    panel = open_panel("demo-1")
    header = html.unescape(panel.header.value)
    assert "demo-1" in header and "not AWS" in header and "us-east-1" in header
    assert "account" in header and "rules from built-in default" in header
    assert rows_as_text(panel) == [("8786,8787", "0.0.0.0/0", "tcp", "")]
    assert find(panel, "scheduler IP").value is True
    assert "public IP" in html.unescape(panel.meaning.value)
    assert "open to the whole internet" in html.unescape(panel.reachability.value)
    # Opening changes nothing.
    assert SESSION.values == {}
    assert panel.marker.value == ""


def test_the_panel_says_what_the_rules_replace_and_what_was_not_read(open_panel, ip):
    from coiled_jupyter.provision import account

    panel = open_panel()
    notes = html.unescape(panel.notes.value)
    assert "note: the account defaults were not read here" in notes
    account.set_backend_options(ingress=[{"ports": [8786], "cidr": "10.4.0.0/16"}])
    ip.run_line_magic("coiled_ingress", "add 9000 10.9.0.0/16")  # known here: this process wrote it
    notes = html.unescape(panel.notes.value)
    assert "replace those of the account default" in notes and "tcp 8786 from 10.4.0.0/16" in notes
    assert "were not read" not in notes


def test_a_config_file_is_where_the_rows_come_from(dask_config):
    (dask_config / "coiled.yaml").write_text(
        "coiled:\n  backend-options:\n    ingress:\n"
        "      - {ports: [8786], cidr: 10.3.0.0/16, description: office}\n"
    )
    panel = FirewallPanel(background=False)
    try:
        assert rows_as_text(panel) == [("8786", "10.3.0.0/16", "tcp", "office")]
        assert "dask config" in panel.header.value
    finally:
        panel.close()


# --------------------------------------------------------------------------------------------------
# Rows


def test_add_and_remove_rows(open_panel, ip):
    panel = open_panel()
    find(panel, "Add rule").click()
    assert len(rows_as_text(panel)) == 2
    # A row being filled in is not sent: the session still sets nothing.
    assert session_rules() is None
    fill(last_row(panel), ports="9000-9010", source="10.9.0.0/16", protocol="udp")
    assert session_rules() == [
        ("tcp", "8786", "0.0.0.0/0"),
        ("tcp", "8787", "0.0.0.0/0"),
        ("udp", "9000-9010", "10.9.0.0/16"),
    ]
    first = row_boxes(panel)[0]
    find(first, "Remove").click()
    assert rows_as_text(panel) == [("9000-9010", "10.9.0.0/16", "udp", "")]
    assert session_rules() == [("udp", "9000-9010", "10.9.0.0/16")]
    # The next %coiled_ingress shows the panel's edits.
    view = ip.run_line_magic("coiled_ingress", "")
    assert [(r.protocol, r.ports, r.source) for r in view.settings.rules] == session_rules()
    assert "unapplied changes" in panel.marker.value and "unsaved changes" in panel.marker.value


def test_removing_every_row_means_no_rules(open_panel):
    panel = open_panel()
    find(panel, "Remove").click()
    assert rows_as_text(panel) == []
    assert session_rules() == []
    assert "ingress: []" in panel.cell.value


@pytest.mark.parametrize(
    "label, bad, sentence, good",
    [
        (SOURCE, "10.1.0.2/16", "host bits set", "10.1.0.0/16"),
        ("ports", "70000", "outside 1-65535", "8786"),
        ("ports", "87a6", "not a port", "8786"),
        ("description", "VPN <office>", "characters AWS refuses", "VPN office"),
        (SOURCE, "10.1.0.300/16", "not an IP network", "10.1.0.0/16"),
    ],
)
def test_an_invalid_field_is_marked_and_blocks_apply_and_save(
    open_panel, label, bad, sentence, good
):
    panel = open_panel()
    row = last_row(panel)
    fill(row, ports="8786", source="10.1.0.0/16", description="VPN")
    before = session_rules()
    find(row, label).value = bad
    field = find(row, label)
    assert "--jp-error-color" in field.layout.border
    message = row.children[1].value
    assert sentence in html.unescape(message)
    assert "<office>" not in message  # escaped
    for name in ("Apply", "Save to my config", "Save as team default"):
        assert find(panel, name).disabled, name
    assert not find(panel, "Plan").disabled
    assert "invalid" in panel.marker.value
    # The invalid edit did not reach the session.
    assert session_rules() == before
    # Fixed: unmarked, the sentence gone, the buttons back, the session updated.
    find(row, label).value = good
    assert field.layout.border in ("", None)
    assert row.children[1].value == ""
    assert not find(panel, "Apply").disabled
    assert session_rules() == before


def test_each_bad_field_keeps_its_own_sentence(open_panel):
    panel = open_panel()
    row = last_row(panel)
    fill(row, ports="70000", source="10.1.0.2/16")
    message = html.unescape(row.children[1].value)
    assert "outside 1-65535" in message and "host bits set" in message
    assert "--jp-error-color" in find(row, "ports").layout.border
    assert "--jp-error-color" in find(row, SOURCE).layout.border
    assert not find(row, "description").layout.border


def test_the_toggle_sets_the_session_and_says_what_it_means(open_panel, ip):
    panel = open_panel()
    find(panel, "scheduler IP").value = False
    assert SESSION.of().use_scheduler_public_ip is False
    assert "private IP" in html.unescape(panel.meaning.value)
    view = ip.run_line_magic("coiled_scheduler_ip", "")
    assert view.settings.use_scheduler_public_ip.value is False
    assert "use_scheduler_public_ip: false" in panel.cell.value


# --------------------------------------------------------------------------------------------------
# Plan, Apply, Save, Revert


def _group(cloud, group_id: str) -> dict:
    return cloud.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]


def test_plan_then_apply_show_the_core_tables_and_change_the_group(open_panel, cloud):
    panel = open_panel("panel-apply")
    fill(last_row(panel), ports="8786,8787", source="10.1.0.0/16", description="VPN")
    find(panel, "Plan").click()
    plan = shown(panel)
    assert plan["payload"]["kind"] == "plan" and plan["payload"]["changes"] is True
    assert "Firewall plan" in plan["html"] and "10.1.0.0/16" in plan["html"]
    # The core sends neighbouring ports as one range.
    assert [(r["action"], r["ports"]) for r in plan["payload"]["rows"]] == [("add", "8786-8787")]
    names = [g["GroupName"] for g in cloud.ec2.describe_security_groups()["SecurityGroups"]]
    assert not any("panel-apply" in name for name in names)  # Plan changed nothing

    find(panel, "Apply").click()
    applied = shown(panel)
    assert applied["payload"]["kind"] == "apply", status(panel)
    assert "Firewall applied" in applied["html"]
    group = _group(cloud, applied["payload"]["group_id"])
    seen = [
        (p["FromPort"], p["ToPort"], r["CidrIp"], r.get("Description"))
        for p in group["IpPermissions"]
        for r in p["IpRanges"]
    ]
    assert seen == [(8786, 8787, "10.1.0.0/16", "VPN")]
    assert "unapplied" not in panel.marker.value
    assert applied["payload"]["account_id"] in panel.header.value
    assert status(panel).endswith("ready")

    # An edit after Apply is unapplied again; a plan with no change clears the marker.
    fill(last_row(panel), description="VPN 2")
    assert "unapplied changes" in panel.marker.value
    fill(last_row(panel), description="VPN")
    find(panel, "Plan").click()
    assert shown(panel)["payload"]["changes"] is False
    assert "unapplied" not in panel.marker.value


def test_apply_runs_in_the_background_with_progress(dask_config, sandbox, cloud):
    import threading

    from coiled_jupyter.provision import aws
    from coiled_jupyter.provision.target import target

    # The apply's EC2 calls wait at before-send until the test has looked at the busy panel.
    released = threading.Event()
    ec2 = aws.client("ec2", target().connection())

    def hold(**_) -> None:
        released.wait(30)

    ec2.meta.events.register("before-send", hold)
    panel = FirewallPanel("panel-bg")
    try:
        fill(last_row(panel), source="10.2.0.0/16")
        find(panel, "Apply").click()
        assert "applying" in status(panel)
        assert all(find(panel, name).disabled for name in BUTTONS)
        assert find(panel, "Add rule").disabled and find(last_row(panel), "ports").disabled
        released.set()
        assert panel.wait(60)
        assert status(panel).endswith("ready"), status(panel)
        assert not any(find(panel, name).disabled for name in BUTTONS)
        group = _group(cloud, shown(panel)["payload"]["group_id"])
        assert {r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"]} == {
            "10.2.0.0/16"
        }
    finally:
        released.set()
        ec2.meta.events.unregister("before-send", hold)
        panel.wait(60)
        panel.close()


def test_a_cloud_failure_is_one_sentence_in_the_panel(open_panel, faults, cloud):
    panel = open_panel("panel-fails")
    fill(last_row(panel), source="10.2.0.0/16")
    faults.fail("CreateSecurityGroup", "UnauthorizedOperation", status=403, times=None)
    find(panel, "Apply").click()
    text = status(panel)
    assert "UnauthorizedOperation" in text and "\n" not in text
    assert "--jp-error-color" in panel.status.value
    assert not find(panel, "Apply").disabled  # ready for another try
    names = [g["GroupName"] for g in cloud.ec2.describe_security_groups()["SecurityGroups"]]
    assert not any("panel-fails" in name for name in names)


def test_save_to_my_config_writes_the_file(open_panel):
    panel = open_panel()
    fill(last_row(panel), ports="8786", source="10.4.0.0/16", description="lab")
    find(panel, "scheduler IP").value = False
    assert "unsaved changes" in panel.marker.value
    find(panel, "Save to my config").click()
    saved = shown(panel)["payload"]
    assert saved["kind"] == "save" and saved["scope"] == "user"
    import yaml

    written = yaml.safe_load(open(saved["location"]).read())
    assert written["coiled"]["backend-options"]["ingress"] == [
        {"ports": [8786], "cidr": "10.4.0.0/16", "description": "lab"}
    ]
    assert written["coiled"]["use_scheduler_public_ip"] is False
    assert "unsaved" not in panel.marker.value


def test_save_with_nothing_set_says_so(open_panel):
    panel = open_panel()
    find(panel, "Save to my config").click()
    assert "nothing to save" in status(panel)
    assert panel.output.outputs == ()


def test_save_as_team_default_writes_the_account_store(open_panel, cloud):
    panel = open_panel()
    fill(last_row(panel), ports="8786", source="10.5.0.0/16")
    find(panel, "Save as team default").click()
    assert shown(panel)["payload"]["scope"] == "account", status(panel)
    parameters = cloud.ssm.describe_parameters()["Parameters"]
    values = [cloud.ssm.get_parameter(Name=p["Name"])["Parameter"]["Value"] for p in parameters]
    assert any("10.5.0.0/16" in value for value in values)


def test_revert_restores_the_saved_settings(dask_config, open_panel):
    (dask_config / "coiled.yaml").write_text(
        "coiled:\n  backend-options:\n    ingress:\n      - {ports: [8786], cidr: 10.3.0.0/16}\n"
    )
    panel = open_panel()
    fill(last_row(panel), source="10.7.0.0/16")
    find(panel, "Add rule").click()
    fill(last_row(panel), ports="22", source="me")
    find(panel, "scheduler IP").value = False
    assert SESSION.of().ingress is not None
    find(panel, "Revert").click()
    assert rows_as_text(panel) == [("8786", "10.3.0.0/16", "tcp", "")]
    assert find(panel, "scheduler IP").value is True
    assert SESSION.values == {}
    assert "unsaved" not in panel.marker.value
    assert shown(panel)["payload"]["kind"] == "settings"


def test_typing_never_waits_for_the_public_address_lookup(dask_config, sandbox):
    """Each edit re-judges reachability; offline, the lookup waits its timeout. The panel sends edits
    from its own thread, so typing does not wait, and the newest edit is the one that stays."""
    silent = socket.socket()  # accepts connections, never answers: a lookup held until it is closed
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    service = f"http://127.0.0.1:{silent.getsockname()[1]}/"
    lookup = {
        "coiled-jupyter.public-ip.services": [service],
        "coiled-jupyter.public-ip.timeout": 60,
    }
    with dask.config.set(lookup):
        panel = FirewallPanel()
        try:
            source = find(last_row(panel), SOURCE)
            for text in ("10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"):
                source.value = text
            # Typing has returned while the first edit is still held in the lookup: it did not wait.
            assert not panel.wait(0)
            silent.close()  # the held lookup fails at once; the edits go through
            assert panel.wait(30)
            assert {rule[2] for rule in session_rules()} == {"10.3.0.0/16"}
            assert "10.3.0.0/16" in panel.cell.value
        finally:
            silent.close()
            panel.wait(30)
            panel.close()


# --------------------------------------------------------------------------------------------------
# One state with the magics


def test_a_magic_change_shows_in_an_open_panel_and_a_new_one(open_panel, ip):
    panel = open_panel()
    ip.run_line_magic("coiled_ingress", "set [{ports: [8786], cidr: 10.8.0.0/16}]")
    ip.run_line_magic("coiled_ingress", "add 9000 10.9.0.0/16 --description 'from a magic'")
    expected = [("8786", "10.8.0.0/16", "tcp", ""), ("9000", "10.9.0.0/16", "tcp", "from a magic")]
    assert rows_as_text(panel) == expected
    ip.run_line_magic("coiled_scheduler_ip", "private")
    assert find(panel, "scheduler IP").value is False
    assert rows_as_text(open_panel()) == expected
    ip.run_line_magic("coiled_ingress", "reset")
    assert rows_as_text(panel) == [("8786,8787", "0.0.0.0/0", "tcp", "")]
    assert find(panel, "scheduler IP").value is True


def test_two_panels_follow_each_other(open_panel):
    first, second = open_panel(), open_panel()
    fill(last_row(first), source="10.6.0.0/16")
    assert rows_as_text(second) == [("8786,8787", "10.6.0.0/16", "tcp", "")]


def test_a_closed_panel_stops_following(open_panel, ip):
    panel = open_panel()
    panel.close()
    ip.run_line_magic("coiled_ingress", "set [{ports: [8786], cidr: 10.8.0.0/16}]")
    assert panel.rows[0].source.value == "0.0.0.0/0"


@pytest.mark.parametrize("description", ["cost $5", "1e5", "true", "0x10"])
def test_the_copied_cell_reproduces_the_settings_and_does_not_apply(
    open_panel, ip, sandbox, description
):
    """The copied cell sets what the panel shows, and nothing else: a description the YAML reader
    would take for a number, a boolean or a refused hex number comes back as the same text."""
    panel = open_panel("panel-cell")
    fill(last_row(panel), ports="8786,8000-8100", source="10.1.0.0/16", description=description)
    find(panel, "scheduler IP").value = False
    text = panel.cell.value
    assert text.startswith("%%coiled_ingress --cluster panel-cell\n")
    assert text.count("$") == 2 * description.count("$")
    expected = SESSION.values
    ip.run_line_magic("coiled_ingress", "reset")
    first, body = text.split("\n", 1)
    result = ip.run_cell_magic("coiled_ingress", first.split(" ", 1)[1], body)
    assert result.to_payload()["kind"] == "settings"
    assert SESSION.values == expected
    assert [r.description for r in SESSION.of("panel-cell").ingress] == [description, description]


def test_apply_updates_a_plain_output_for_saved_notebooks(open_panel, sandbox):
    from IPython.display import display
    from IPython.utils.capture import capture_output

    panel = open_panel("panel-record")
    with capture_output() as captured:
        display(panel)
        fill(last_row(panel), source="10.1.0.0/16")
        find(panel, "Apply").click()
    widget, record, update = captured.outputs
    assert "application/vnd.jupyter.widget-view+json" in widget.data
    assert "as last applied" in record.data["text/plain"] and not record.update
    assert update.update
    assert update.data[MIMETYPE]["kind"] == "apply"
    assert "10.1.0.0/16" in update.data["text/html"]


# --------------------------------------------------------------------------------------------------
# %coiled_firewall


def test_the_magic_opens_the_panel(ip, dask_config):
    opened = ip.run_line_magic("coiled_firewall", "--cluster demo-2")
    try:
        assert isinstance(opened, FirewallPanel)
        assert "demo-2" in opened.header.value
    finally:
        opened.close()


def test_the_magic_refuses_a_bad_cluster_name_in_one_sentence(ip, dask_config):
    with pytest.raises(UsageError, match="cluster name 'bad/name' is not valid") as caught:
        ip.run_line_magic("coiled_firewall", "--cluster bad/name")
    assert type(caught.value) is UsageError


def test_the_magic_has_help(ip, capsys):
    ip.run_line_magic("coiled_firewall", "--help")
    assert "firewall panel" in capsys.readouterr().out


def test_the_panel_is_exported_lazily():
    import coiled_jupyter

    assert coiled_jupyter.FirewallPanel is panel_module.FirewallPanel


def test_rehearse_button_calls_the_session_and_says_its_sentence(dask_config, open_panel):
    """The panel's Rehearse is session.rehearse: before an apply there is no group to rehearse, and
    the panel says so in the session's sentence (the rehearsal itself is tested with packets in
    tests/test_rehearsal.py)."""
    from coiled_jupyter.rehearsal.namespaces import unavailable

    panel = open_panel("not-applied-yet")
    find(panel, "Rehearse").click()
    reason = unavailable()
    if reason is None:
        assert status(panel).startswith("cluster 'not-applied-yet' has no security group yet")
    else:  # where it cannot run, the result is the one sentence saying why
        assert shown(panel)["payload"]["summary"] == reason


# --------------------------------------------------------------------------------------------------
# Drafts, not keystrokes; stale edits


def test_text_fields_reach_the_kernel_only_when_committed(open_panel):
    """continuous_update=False: the browser sends a field on Enter or when it is left, never key by
    key (tests/test_panel_browser.py types one key at a time in a real browser)."""
    panel = open_panel()
    find(panel, "Add rule").click()
    for row in row_boxes(panel):
        for label in ("ports", SOURCE, "description"):
            assert find(row, label).continuous_update is False, label


@pytest.mark.parametrize("button", ["Plan", "Apply"])
def test_plan_and_apply_refuse_an_invalid_row_with_its_sentence(open_panel, button, cloud):
    panel = open_panel("panel-draft")
    fill(last_row(panel), ports="9100", source="10.20.0.0/16")
    before = session_rules("panel-draft")
    fill(last_row(panel), source="10.20.0.5/16")
    getattr(panel, button.lower())()  # as a click would, were the button not disabled
    assert "a row is not valid" in status(panel) and "host bits set" in status(panel)
    assert panel.output.outputs == ()
    assert session_rules("panel-draft") == before
    names = [g["GroupName"] for g in cloud.ec2.describe_security_groups()["SecurityGroups"]]
    assert not any("panel-draft" in name for name in names)


def test_an_invalid_row_stays_a_draft_when_the_session_changes(open_panel, ip):
    panel = open_panel()
    find(panel, "Add rule").click()
    fill(last_row(panel), ports="9100", source="10.20.0.5/16")
    ip.run_line_magic("coiled_ingress", "set [{ports: [8786], cidr: 10.8.0.0/16}]")
    assert rows_as_text(panel) == [
        ("8786", "10.8.0.0/16", "tcp", ""),
        ("9100", "10.20.0.5/16", "tcp", ""),
    ]
    assert "host bits set" in html.unescape(last_row(panel).children[1].value)
    assert session_rules() == [("tcp", "8786", "10.8.0.0/16")]  # never the /32 of a prefix
    ip.run_line_magic("coiled_ingress", "add 22 10.9.0.0/16")
    assert sorted(session_rules()) == [("tcp", "22", "10.9.0.0/16"), ("tcp", "8786", "10.8.0.0/16")]


@pytest.fixture
def held_lookup():
    """A public-address service on loopback that, once ``armed`` is set, holds its next request until
    ``release`` is set (``arrived`` says it came); every other request is answered at once with an
    error."""
    import http.server
    import threading

    armed, arrived, release = threading.Event(), threading.Event(), threading.Event()
    first = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if armed.is_set() and first.acquire(blocking=False):
                arrived.set()
                release.wait(30)
            self.send_error(503)

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    lookup = {"coiled-jupyter.public-ip.services": [url], "coiled-jupyter.public-ip.timeout": 30}
    import types

    with dask.config.set(lookup):
        yield types.SimpleNamespace(armed=armed, arrived=arrived, release=release)
    release.set()
    server.shutdown()
    server.server_close()


def test_a_panel_edit_waiting_in_its_thread_never_undoes_a_magic(dask_config, held_lookup, ip):
    """Issue 16 item 3: the panel's edit A waits in its thread on the public-address lookup, edit B
    (made from rows that still hold 0.0.0.0/0) waits behind it, and the next cell removes 8786 from
    0.0.0.0/0. B must not put it back; the panel shows the session afterwards."""
    panel = FirewallPanel()  # edits from its thread, as in a notebook
    try:
        find(panel, "Add rule").click()
        held_lookup.armed.set()
        fill(last_row(panel), ports="9000", source="10.9.0.0/16")  # edit A
        assert held_lookup.arrived.wait(30)  # A is in the session; its view waits on the lookup
        fill(row_boxes(panel)[0], description="world")  # edit B, queued behind A
        ip.run_line_magic("coiled_ingress", "remove 8786 0.0.0.0/0")  # the next cell
        held_lookup.release.set()
        assert panel.wait(60)
        assert session_rules() == [("tcp", "8787", "0.0.0.0/0"), ("tcp", "9000", "10.9.0.0/16")]
        assert rows_as_text(panel) == [
            ("8787", "0.0.0.0/0", "tcp", ""),
            ("9000", "10.9.0.0/16", "tcp", ""),
        ]
        assert "the session changed" in status(panel)
        assert "8786" not in panel.cell.value
    finally:
        held_lookup.release.set()
        panel.wait(60)
        panel.close()


def test_the_unapplied_marker_compares_with_what_was_applied(dask_config, sandbox, ip):
    import threading

    from coiled_jupyter.provision import aws
    from coiled_jupyter.provision.target import target

    arrived, released = threading.Event(), threading.Event()
    ec2 = aws.client("ec2", target().connection())

    def hold(**_) -> None:
        arrived.set()
        released.wait(30)

    ec2.meta.events.register("before-send", hold)
    panel = FirewallPanel("panel-marker")
    try:
        fill(last_row(panel), source="10.2.0.0/16")
        assert panel.wait(30)
        find(panel, "Apply").click()
        assert arrived.wait(30)  # the apply has read the settings and waits on its first call
        ip.run_line_magic("coiled_ingress", "add 22 10.9.0.0/16 --cluster panel-marker")
        released.set()
        assert panel.wait(60)
        assert shown(panel)["payload"]["kind"] == "apply", status(panel)
        assert "unapplied changes" in html.unescape(panel.marker.value)
    finally:
        released.set()
        ec2.meta.events.unregister("before-send", hold)
        panel.wait(60)
        panel.close()
