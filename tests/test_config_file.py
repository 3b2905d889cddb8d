"""Writing the Dask config file: keep what the tool does not own, atomically, or refuse and touch nothing."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest
import yaml

from coiled_jupyter.config_file import save_config
from coiled_jupyter.errors import ConfigFileError
from coiled_jupyter.rules import parse_ingress
from coiled_jupyter.settings import config_layer, config_path

TOKEN = "abc123-secret"
TOKEN_LINE = f'  token: "{TOKEN}"'
RULES = parse_ingress(
    [{"ports": [8786, 8787], "cidr": "10.1.0.0/16"}, {"ports": [8786], "cidr": "10.2.0.0/16"}]
)
OTHER_RULES = parse_ingress(
    [
        {
            "ports": ["9000-9100"],
            "cidr": "2001:db8::/32",
            "protocol": "udp",
            "description": "lab (v6)",
        },
        {"ports": [22], "cidr": "me"},
    ]
)

# What `coiled login` and a person leave in ~/.config/dask/coiled.yaml.
USER_FILE = textwrap.dedent(f"""\
    # Coiled settings; written by `coiled login`, edited by hand.
    coiled:
      account: my-team  # the team account
      # keep this secret
    {TOKEN_LINE}
      server: https://cloud.coiled.io
      backend_options:
        region_name: us-east-2  # closest region
        ingress:
          - ports: [1, 2, 3]
            cidr: 192.0.2.0/24
      use_scheduler_public_ip: true

    # Dask's own settings
    distributed:
      scheduler:
        allowed-failures: 5
    """)


pytestmark = pytest.mark.usefixtures("dask_config")


@pytest.fixture
def user_file(dask_config) -> Path:
    path = dask_config / "coiled.yaml"
    path.write_text(USER_FILE)
    return path


def read(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def leftovers(folder: Path) -> list[str]:
    """Anything in the folder besides the config files a test put there."""
    return sorted(p.name for p in folder.iterdir() if p.name not in ("coiled.yaml", "dask.yaml"))


# --------------------------------------------------------------------------------------------------
# Keeping what is not ours


def test_round_trip_keeps_unrelated_keys_comments_and_values(user_file):
    save_config(RULES, False)
    text = user_file.read_text()
    for line in [
        "# Coiled settings; written by `coiled login`, edited by hand.",
        "  account: my-team  # the team account",
        "  # keep this secret",
        "  server: https://cloud.coiled.io",
        "    region_name: us-east-2  # closest region",
        "# Dask's own settings",
        "    allowed-failures: 5",
    ]:
        assert line in text.splitlines(), line
    data = read(user_file)
    assert data["coiled"]["account"] == "my-team"
    assert data["coiled"]["backend_options"]["region_name"] == "us-east-2"
    assert data["distributed"] == {"scheduler": {"allowed-failures": 5}}
    assert data["coiled"]["use_scheduler_public_ip"] is False


def test_the_token_line_survives_byte_for_byte(user_file):
    save_config(RULES, False)
    lines = user_file.read_text().splitlines()
    assert TOKEN_LINE in lines
    assert lines[lines.index(TOKEN_LINE) - 1] == "  # keep this secret"
    assert user_file.read_text().count(TOKEN) == 1


def test_the_token_line_survives_in_a_file_indented_by_four(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text(f'coiled:\n    # keep this secret\n    token: "{TOKEN}"\n    user: bob\n')
    save_config(RULES)
    lines = path.read_text().splitlines()
    assert f'    token: "{TOKEN}"' in lines
    assert lines[lines.index(f'    token: "{TOKEN}"') - 1] == "    # keep this secret"
    assert config_layer().ingress == RULES


def test_single_quotes_and_plain_tokens_survive_too(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text(f"coiled:\n  token: '{TOKEN}'\n  other: plain-{TOKEN}\n")
    save_config(RULES)
    assert f"  token: '{TOKEN}'" in path.read_text().splitlines()
    assert f"  other: plain-{TOKEN}" in path.read_text().splitlines()


def test_file_mode_is_kept(user_file):
    user_file.chmod(0o640)
    save_config(RULES)
    assert stat.S_IMODE(user_file.stat().st_mode) == 0o640


def test_a_new_file_is_created_private(dask_config):
    path = save_config(RULES, True)
    assert path == dask_config / "coiled.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read(path) == {
        "coiled": {
            "backend-options": {
                "ingress": [
                    {"ports": [8786, 8787], "cidr": "10.1.0.0/16"},
                    {"ports": [8786], "cidr": "10.2.0.0/16"},
                ]
            },
            "use_scheduler_public_ip": True,
        }
    }


def test_a_missing_dask_config_folder_is_created(tmp_path, monkeypatch):
    folder = tmp_path / "not" / "yet"
    monkeypatch.setenv("DASK_CONFIG", str(folder))
    assert save_config(RULES) == folder / "coiled.yaml"
    assert stat.S_IMODE((folder / "coiled.yaml").stat().st_mode) == 0o600


def test_dask_config_variable_is_honoured(tmp_path, monkeypatch):
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv("DASK_CONFIG", str(other))
    assert config_path() == other / "coiled.yaml"
    assert save_config(RULES) == other / "coiled.yaml"
    assert (other / "coiled.yaml").exists()


def test_an_explicit_path_is_written(tmp_path, dask_config):
    target = tmp_path / "team" / "coiled.yaml"
    assert save_config(RULES, path=target) == target
    assert read(target)["coiled"]["backend-options"]["ingress"][1] == {
        "ports": [8786],
        "cidr": "10.2.0.0/16",
    }
    assert not (dask_config / "coiled.yaml").exists()


def test_ingress_is_replaced_as_a_whole(user_file):
    save_config(OTHER_RULES)
    assert read(user_file)["coiled"]["backend_options"]["ingress"] == [
        {"ports": [22], "cidr": "me"},
        {
            "ports": ["9000-9100"],
            "cidr": "2001:db8::/32",
            "protocol": "udp",
            "description": "lab (v6)",
        },
    ]
    assert "192.0.2.0/24" not in user_file.read_text()


def test_an_empty_rule_list_is_written_and_read_back_as_no_rules(user_file):
    save_config([])
    assert read(user_file)["coiled"]["backend_options"]["ingress"] == []
    assert config_layer().ingress == []


def test_only_the_toggle_leaves_ingress_alone(user_file):
    save_config(use_scheduler_public_ip=False)
    data = read(user_file)
    assert data["coiled"]["use_scheduler_public_ip"] is False
    assert data["coiled"]["backend_options"]["ingress"] == [
        {"ports": [1, 2, 3], "cidr": "192.0.2.0/24"}
    ]


def test_writing_nothing_changes_no_value(user_file):
    save_config()
    assert read(user_file) == yaml.safe_load(USER_FILE)


def test_the_deprecated_firewall_key_is_removed_when_ingress_is_written(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text(
        "coiled:\n  backend_options:\n    region_name: us-east-2\n"
        "    firewall:\n      ports: [22]\n      cidr: 0.0.0.0/0\n"
    )
    save_config(RULES)
    options = read(path)["coiled"]["backend_options"]
    assert "firewall" not in options
    assert options["region_name"] == "us-east-2"
    assert parse_ingress(options["ingress"]) == RULES


def test_the_deprecated_firewall_key_stays_when_only_the_toggle_is_written(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text(
        "coiled:\n  backend_options:\n    firewall:\n      ports: [22]\n      cidr: 10.0.0.0/8\n"
    )
    save_config(use_scheduler_public_ip=False)
    assert read(path)["coiled"]["backend_options"]["firewall"] == {
        "ports": [22],
        "cidr": "10.0.0.0/8",
    }


@pytest.mark.parametrize("spelling", ["backend_options", "backend-options"])
def test_the_existing_spelling_of_backend_options_is_kept(dask_config, spelling):
    path = dask_config / "coiled.yaml"
    path.write_text(f"coiled:\n  {spelling}:\n    region_name: us-east-2\n")
    save_config(RULES)
    coiled = read(path)["coiled"]
    assert list(coiled) == [spelling]
    assert coiled[spelling]["region_name"] == "us-east-2"
    assert parse_ingress(coiled[spelling]["ingress"]) == RULES


def test_the_existing_spelling_of_the_toggle_is_kept(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text("coiled:\n  use-scheduler-public-ip: true\n")
    save_config(use_scheduler_public_ip=False)
    assert read(path) == {"coiled": {"use-scheduler-public-ip": False}}


def test_a_file_of_only_comments_keeps_them(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text("# Coiled settings go here.\n# coiled:\n#   token: old\n")
    save_config(RULES)
    text = path.read_text()
    assert text.startswith("# Coiled settings go here.\n# coiled:\n#   token: old\n")
    assert config_layer().ingress == RULES


@pytest.mark.parametrize("text", ["", "\n\n", "null\n", "{}\n"])
def test_an_empty_file_gets_the_settings(dask_config, text):
    path = dask_config / "coiled.yaml"
    path.write_text(text)
    save_config(RULES, True)
    assert config_layer().ingress == RULES
    assert config_layer().use_scheduler_public_ip is True


# --------------------------------------------------------------------------------------------------
# Reading back


def test_what_is_written_is_read_back_by_the_config_layer(user_file):
    rules = parse_ingress(
        [
            {
                "ports": [8786, 8787, "9000-9010"],
                "cidr": "10.1.0.0/16",
                "description": "office: main (#1)",
            },
            {"ports": [53], "cidr": "2001:db8::/32", "protocol": "udp"},
            {"ports": [8786], "cidr": "everyone"},
            {"ports": [8787], "cidr": "me"},
            {"ports": [22], "cidr": "sg-0123456789abcdef0"},
        ]
    )
    save_config(rules, False)
    layer = config_layer()
    assert layer.ingress == rules
    assert [r.description for r in layer.ingress] == [r.description for r in rules]
    assert layer.use_scheduler_public_ip is False
    assert layer.ingress_detail == layer.public_ip_detail == str(user_file)


def test_saving_twice_gives_the_same_bytes(user_file):
    save_config(RULES, False)
    first = user_file.read_bytes()
    save_config(RULES, False)
    assert user_file.read_bytes() == first


# --------------------------------------------------------------------------------------------------
# Refusing, and atomicity


@pytest.mark.parametrize(
    "text",
    [
        "coiled:\n  token: abc\n    nested: [unclosed\n",
        "coiled: {token: abc\n",
        "coiled:\n  token: a\n  token: b\n",  # a key twice: PyYAML would keep the last
        "\tcoiled: x\n",
    ],
)
def test_an_unparsable_file_is_refused_and_left_unchanged(dask_config, text):
    path = dask_config / "coiled.yaml"
    path.write_text(text)
    before = path.read_bytes()
    with pytest.raises(ConfigFileError) as caught:
        save_config(RULES, True)
    message = str(caught.value)
    assert str(path) in message
    assert "cannot be parsed as YAML" in message and "nothing was written" in message
    assert path.read_bytes() == before
    assert leftovers(dask_config) == []


@pytest.mark.parametrize("text", ["- coiled\n- dask\n", "just a sentence\n", "42\n"])
def test_a_file_whose_top_level_is_not_a_mapping_is_refused(dask_config, text):
    path = dask_config / "coiled.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match="does not hold a mapping at the top"):
        save_config(RULES)
    assert path.read_text() == text
    assert leftovers(dask_config) == []


def test_a_coiled_key_that_is_not_a_mapping_is_refused(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text("coiled: yes please\n")
    with pytest.raises(ConfigFileError, match="'coiled' in the Dask config file is not a mapping"):
        save_config(RULES)
    assert path.read_text() == "coiled: yes please\n"


def test_no_temporary_file_is_left_after_success(user_file, dask_config):
    (dask_config / "dask.yaml").write_text("distributed: {}\n")
    save_config(RULES, False)
    save_config(OTHER_RULES)
    assert leftovers(dask_config) == []


def test_a_failed_write_leaves_the_file_and_no_temporary_file(user_file, dask_config, monkeypatch):
    before = user_file.read_bytes()

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ConfigFileError, match=r"cannot be written \(disk full\); the file is as"):
        save_config(RULES, False)
    monkeypatch.undo()
    assert user_file.read_bytes() == before
    assert leftovers(dask_config) == []


def test_the_file_is_replaced_not_rewritten_in_place(user_file):
    # A reader holding the old file keeps reading the old bytes: the new file is a new inode.
    with open(user_file, "rb") as old:
        save_config(RULES, False)
        assert old.read() == USER_FILE.encode()
    assert TOKEN_LINE in user_file.read_text().splitlines()


# --------------------------------------------------------------------------------------------------
# Secrets


def test_the_token_never_appears_in_what_save_config_returns(user_file):
    result = save_config(RULES, False)
    assert isinstance(result, Path)
    for text in (str(result), repr(result), os.fspath(result)):
        assert TOKEN not in text


def test_the_tool_writes_no_secret_of_its_own(dask_config):
    path = save_config(RULES, False)
    data = read(path)
    assert set(data) == {"coiled"}
    assert set(data["coiled"]) == {"backend-options", "use_scheduler_public_ip"}
    assert set(data["coiled"]["backend-options"]) == {"ingress"}


# --------------------------------------------------------------------------------------------------
# Every comment, symlinks, and several kernels saving at once

LISTED = textwrap.dedent("""\
    coiled:
      backend-options:
        ingress:
          - ports: [1, 2, 3]  # the lab
            cidr: 192.0.2.0/24
          # the annex, until March
          - ports: [4]
            cidr: 198.51.100.0/24
        # region and zone are set by hand, see the wiki
        region_name: us-east-2
      use_scheduler_public_ip: true
    """)


def comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#")]


def test_a_comment_after_the_ingress_list_is_kept_after_the_new_list(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text(LISTED)
    save_config(parse_ingress([{"ports": [8786], "cidr": "10.1.0.0/16"}]))
    lines = path.read_text().splitlines()
    after = lines.index("    # region and zone are set by hand, see the wiki")
    assert lines[after - 3 : after + 2] == [
        "      - ports: [8786]",
        "        cidr: 10.1.0.0/16",
        "      # the annex, until March",  # its rule went; a comment line of its own stays
        "    # region and zone are set by hand, see the wiki",
        "    region_name: us-east-2",
    ]
    assert read(path)["coiled"]["backend-options"]["region_name"] == "us-east-2"


def test_a_rule_that_stays_keeps_its_comment_and_an_empty_list_keeps_the_lines_after(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text(LISTED)
    save_config(parse_ingress([{"ports": [1, 2, 3], "cidr": "192.0.2.0/24"}]))
    assert "      - ports: [1, 2, 3]  # the lab" in path.read_text().splitlines()
    assert comments(path.read_text()) == comments(LISTED)
    save_config([])
    assert read(path)["coiled"]["backend-options"]["ingress"] == []
    assert comments(path.read_text()) == [
        "# the annex, until March",
        "# region and zone are set by hand, see the wiki",
    ]  # only the end-of-line comment of the removed rule went with it


def test_a_symlinked_file_is_written_through_and_the_link_stays(dask_config, tmp_path):
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "coiled.yaml"
    real.write_text(USER_FILE)
    real.chmod(0o640)
    link = dask_config / "coiled.yaml"
    link.symlink_to(real)
    assert save_config(RULES, False) == link
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert read(real)["coiled"]["use_scheduler_public_ip"] is False
    assert TOKEN_LINE in real.read_text().splitlines()
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert sorted(p.name for p in dotfiles.iterdir()) == ["coiled.yaml"]  # no temporary left
    assert config_layer().ingress == RULES


def test_a_dangling_symlink_is_refused_and_no_folder_is_created(dask_config, tmp_path):
    real = tmp_path / "dotfiles" / "coiled.yaml"
    link = dask_config / "coiled.yaml"
    link.symlink_to(real)
    with pytest.raises(ConfigFileError, match="is a link to .* which does not exist"):
        save_config(RULES)
    assert link.is_symlink() and not (tmp_path / "dotfiles").exists()


def test_a_save_waits_for_another_kernels_save_to_the_same_file(user_file):
    import threading

    from coiled_jupyter.state import file_lock, lock_name

    digest = __import__("hashlib").sha256(str(user_file.resolve()).encode()).hexdigest()[:16]
    done = threading.Event()
    with file_lock(lock_name("dask-config", digest)):
        thread = threading.Thread(target=lambda: (save_config(RULES, False), done.set()))
        thread.start()
        assert not done.wait(0.5)  # held by "another kernel"
        assert read(user_file)["coiled"]["use_scheduler_public_ip"] is True
    thread.join(10)
    assert done.is_set() and read(user_file)["coiled"]["use_scheduler_public_ip"] is False


_SAVER = r"""
import sys, time
from coiled_jupyter.config_file import save_config
from coiled_jupyter.rules import parse_ingress
which, go = int(sys.argv[1]), sys.argv[2]
while not __import__("os").path.exists(go):
    time.sleep(0.005)
if which % 2:
    save_config(use_scheduler_public_ip=False)
else:
    save_config(parse_ingress([{"ports": [8786], "cidr": f"10.{which}.0.0/16"}]))
"""


def test_eight_processes_saving_at_once_leave_an_intact_file_with_every_kernels_key(
    user_file, tmp_path
):
    import subprocess
    import sys

    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(i), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    go.write_text("")
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    data = read(user_file)
    [rule] = data["coiled"]["backend_options"]["ingress"]
    assert rule["cidr"] in {f"10.{i}.0.0/16" for i in range(0, 8, 2)}
    # Saving the toggle and saving the rules are read-modify-writes of different keys: without the
    # lock, a kernel writing back what it read would undo another's change.
    assert data["coiled"]["use_scheduler_public_ip"] is False
    assert data["coiled"]["account"] == "my-team"
    assert data["distributed"] == {"scheduler": {"allowed-failures": 5}}
    assert comments(user_file.read_text()) == comments(USER_FILE)
    assert TOKEN_LINE in user_file.read_text().splitlines()
    assert leftovers(user_file.parent) == []
