"""The calm settings view (issue 22, item 4), and every command a view suggests, run as pasted.

The view leads with the table and one verdict line; layers, notes and reasons sit in a collapsed
``<details>`` (text/plain: one line naming ``%coiled_ingress -v``, which shows them). The commands a
view suggests are collected from its rendered text/plain and text/html, in a set of realistic states,
and each one is run in a real IPython shell with the extension loaded, in that state: it must work.
"""

from __future__ import annotations

import html
import re
import uuid

import dask.config
import pytest

from coiled_jupyter.provision.results import SettingsView


def line(ip, text):
    return ip.run_line_magic("coiled_ingress", text)


def bundle(view) -> dict:
    return view._repr_mimebundle_()


def test_the_view_leads_with_the_table_and_one_verdict_line(ip, sandbox, dask_config):
    view = line(ip, "add 8786,8787 10.1.0.0/16 --description VPN")
    text = bundle(view)["text/plain"].splitlines()
    # The header, the ports the verdicts judge (issue 18), the origins, then the table.
    assert text[1].startswith("ports assumed: kind dask (")
    assert text[2] == (
        "rules from: notebook session (this kernel); use_scheduler_public_ip: true "
        "(from built-in default)"
    )
    # The table: 8786 and 8787 from 10.1.0.0/16 (one row or two, as the ports are written).
    table_end = max(i for i, row in enumerate(text) if row.startswith("tcp "))
    assert all("10.1.0.0/16" in row and row.endswith("VPN") for row in text[5 : table_end + 1])
    assert text[table_end + 1].startswith("can this notebook reach the scheduler (port 8786)? ")
    assert "; the dashboard (port 8787)? " in text[table_end + 1]
    # Nothing else but the line naming the command that shows the rest.
    assert text[table_end + 2 :] == ["why, layers and notes: %coiled_ingress -v --cluster notebook"]
    assert not [t for t in text if t.startswith(("layer ", "note:"))]

    page = bundle(view)["text/html"]
    assert page.index("</table>") < page.index("can this notebook reach") < page.index("<details>")
    details = page[page.index("<details>") :]
    assert "<summary>Why, layers and notes</summary>" in details
    assert "layer built-in default" in details and "wins as a whole" in details
    assert "layer " not in page[: page.index("<details>")]


def test_verbose_shows_everything(ip, sandbox, dask_config):
    line(ip, "add 8786 10.1.0.0/16")
    for option in ("-v", "--verbose"):
        view = line(ip, option)
        assert isinstance(view, SettingsView) and view.verbose
        text = bundle(view)["text/plain"]
        assert "\nwhy:\n" in text and "  layer notebook session: ingress (1 rule" in text
        assert "  note: the rules from notebook session" in text
        assert "%coiled_ingress -v" not in text
        assert "<details open>" in bundle(view)["text/html"]
    assert line(ip, "add 8787 10.1.0.0/16 -v").verbose
    assert not line(ip, "").verbose
    with pytest.raises(Exception, match="does not take --verbose; it is for the settings view"):
        line(ip, "plan -v")


def test_the_replaced_rules_note_is_said_in_the_plan_and_kept_out_of_each_view(
    ip, sandbox, dask_config
):
    views = [line(ip, "add 8786 10.1.0.0/16"), line(ip, "add 8787 10.1.0.0/16"), line(ip, "")]
    for view in views:
        text, page = bundle(view)["text/plain"], bundle(view)["text/html"]
        assert "wins as a whole" not in text
        assert page.count("wins as a whole") == 1
        assert page.index("wins as a whole") > page.index("<details>")
    plan = bundle(line(ip, "plan"))["text/plain"]
    assert plan.count("wins as a whole") == 1


def test_the_built_in_defaults_advice_is_one_command_without_backticks(ip, sandbox, dask_config):
    view = bundle(line(ip, ""))
    assert "`" not in view["text/html"] and "`" not in view["text/plain"]
    assert view["application/vnd.coiled-jupyter.rules+json"]["commands"] == [
        {
            "command": "%coiled_ingress add 8786,8787 me --cluster notebook",
            "does": "admit this notebook's public address on 8786,8787 instead of everyone",
        }
    ]
    assert "remove" not in view["text/plain"]


# --------------------------------------------------------------------------------------------------
# Every suggested command works when pasted


PUBLIC = "203.0.113.7"  # coiled.client_public_ip: this notebook's public address, known offline


def _default(ip):
    return [line(ip, "")]


def _session_opens_the_scheduler(ip):
    return [line(ip, "set [{ports: [8786], cidr: everyone}, {ports: [8787], cidr: 10.1.0.0/16}]")]


def _config_file_opens_the_dashboard(ip):
    (dask_config_folder() / "coiled.yaml").write_text(
        "coiled:\n  backend-options:\n    ingress:\n"
        "      - {ports: [8786], cidr: 10.1.0.0/16}\n"
        "      - {ports: [8787], cidr: 0.0.0.0/0}\n"
    )
    return [line(ip, "")]


def _public_address_not_admitted(ip):
    return [line(ip, "set [{ports: [8786, 8787], cidr: 10.1.0.0/16}]")]


def _private_ip_with_public_rules(ip):
    ip.run_line_magic("coiled_scheduler_ip", "private")
    return [line(ip, "set [{ports: [8786], cidr: 198.51.100.0/24}]")]


def _private_ip_not_admitted(ip):
    # Whatever this machine's interfaces are: not admitted (add it), or no private address
    # (connect on the public IP); either advice must work.
    ip.run_line_magic("coiled_scheduler_ip", "private")
    return [line(ip, "set [{ports: [8786, 8787], cidr: 10.99.0.0/16}]")]


def _team_dropped_a_rule_the_session_still_admits(ip):
    import coiled_jupyter

    coiled_jupyter.set_backend_options(
        ingress=[{"ports": [8786], "cidr": "10.1.0.0/16"}, {"ports": [8786], "cidr": "10.2.0.0/16"}]
    )
    line(ip, "add 8787 10.1.0.0/16")
    coiled_jupyter.set_backend_options(ingress=[{"ports": [8786], "cidr": "10.1.0.0/16"}])
    return [line(ip, "")]


def _applied_twice(ip):
    line(ip, "set [{ports: [8786], cidr: 10.1.0.0/16}]")
    line(ip, "apply")
    line(ip, "set [{ports: [8786, 8787], cidr: 10.2.0.0/16}]")
    line(ip, "apply")
    return [line(ip, "history"), line(ip, "undo")]


STATES = {
    "built-in default": _default,
    "session opens the scheduler": _session_opens_the_scheduler,
    "config file opens the dashboard": _config_file_opens_the_dashboard,
    "public address not admitted": _public_address_not_admitted,
    "private IP with public rules": _private_ip_with_public_rules,
    "private IP not admitted": _private_ip_not_admitted,
    "team dropped a rule": _team_dropped_a_rule_the_session_still_admits,
    "applied twice": _applied_twice,
}


def dask_config_folder():
    import os
    from pathlib import Path

    return Path(os.environ["DASK_CONFIG"])


def suggested(views) -> list[str]:
    """Every command the views show, as a person would copy it: the text of each HTML <code>, and
    each text/plain line from its magic on (with its comment), the verbose form included."""
    found = []
    for view in views:
        shown = [view, view.expanded()] if isinstance(view, SettingsView) else [view]
        for each in shown:
            rendered = bundle(each)
            assert "`" not in rendered["text/html"], rendered["text/html"]
            found += [
                html.unescape(c) for c in re.findall(r"<code>(.*?)</code>", rendered["text/html"])
            ]
            found += re.findall(r"%%?coiled_\w+.*$", rendered["text/plain"], re.MULTILINE)
    return list(dict.fromkeys(found))


def fresh(ip):
    """No session, no config file, no account memory, an empty sandbox: the state is built again."""
    from coiled_jupyter.provision import account
    from coiled_jupyter.provision import sandbox as module
    from coiled_jupyter.settings import SESSION

    SESSION.clear()
    (dask_config_folder() / "coiled.yaml").unlink(missing_ok=True)
    account._known.clear()
    module.reset()


@pytest.mark.parametrize("state", sorted(STATES))
def test_every_command_a_view_suggests_works_when_pasted(state, ip, sandbox, dask_config):
    # A name of its own: the apply history of a cluster outlives the sandbox's reset.
    cluster = re.sub(r"[^a-z0-9]+", "-", f"{state}-{uuid.uuid4().hex[:6]}")
    ip.run_line_magic("config", f'CoiledMagics.cluster = "{cluster}"')
    with dask.config.set({"coiled.client_public_ip": PUBLIC}):
        commands = suggested(STATES[state](ip))
        assert commands, f"{state}: the views suggest nothing"
        for command in commands:
            assert f"--cluster {cluster}" in command or "-h" in command, command
            fresh(ip)
            STATES[state](ip)
            result = ip.run_cell(command)
            assert result.success, (state, command, result.error_in_exec)
