"""Saving coiled.yaml changes only the bytes of our keys, reads the file within bounds, and leaves
nothing behind.

Every other byte stays as it was (other tools' keys however they are spaced, comments, a BOM, CRLF
line ends, the lines after the ingress list whatever its style); a file too large, not regular (a
FIFO would block for ever) or not UTF-8 is one sentence; a save killed between write and rename
leaves a temporary file that the next save recognises as its own and removes; an anchor shared with
another key is refused, so that key never gets our ingress.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coiled_jupyter.config_file import save_config
from coiled_jupyter.errors import ConfigFileError
from coiled_jupyter.rules import parse_ingress
from coiled_jupyter.settings import config_layer

RULES = parse_ingress([{"ports": [8786], "cidr": "10.2.0.0/16"}])


def refused(path: Path, words: str, **kwargs) -> None:
    before = path.read_bytes() if path.exists() and path.is_file() else None
    with pytest.raises(ConfigFileError) as caught:
        save_config(RULES, True, **kwargs)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    if before is not None:
        assert path.read_bytes() == before


def test_a_file_over_the_size_limit_is_refused_unread(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text("# padding\n" * 200_000)
    refused(path, "KiB")


def in_a_process(code: str, dask_config: Path) -> str:
    """Run ``code`` in a process of its own and return what it printed: a read that blocks on a
    FIFO must fail the test (the timeout), not hang it."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "DASK_CONFIG": str(dask_config)},
    )
    return done.stdout + done.stderr


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "elsewhere" / "coiled.yaml"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    # The process's Dask config folder is another one: Dask's own reader blocks on a FIFO there.
    (tmp_path / "empty").mkdir()
    printed = in_a_process(
        f"""\
        from coiled_jupyter.config_file import save_config
        from coiled_jupyter.errors import ConfigFileError
        from coiled_jupyter.rules import parse_ingress
        try:
            save_config(parse_ingress([{{"ports": [8786], "cidr": "10.2.0.0/16"}}]), path={str(fifo)!r})
        except ConfigFileError as error:
            print(error)
        """,
        tmp_path / "empty",
    )
    assert "not a regular file" in printed
    assert fifo.is_fifo()


def test_a_fifo_among_the_dask_config_files_is_refused_without_blocking(tmp_path):
    (tmp_path / "empty").mkdir()
    folder = tmp_path / "with-fifo"
    folder.mkdir()
    os.mkfifo(folder / "team.yaml")
    printed = in_a_process(
        f"""\
        import os
        import dask.config  # Dask reads its folder at import (and would block on the FIFO)
        from coiled_jupyter.errors import ConfigFileError
        from coiled_jupyter.settings import config_layer
        os.environ["DASK_CONFIG"] = {str(folder)!r}
        try:
            config_layer()
        except ConfigFileError as error:
            print(error)
        """,
        tmp_path / "empty",
    )
    assert "not a regular file" in printed and str(folder / "team.yaml") in printed


def test_invalid_utf8_is_one_sentence(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_bytes(b"coiled:\n  token: caf\xe9\n")
    refused(path, "not UTF-8 text (byte 21)")


def test_a_dangling_symlink_creates_no_folder_of_its_target(dask_config, tmp_path):
    link = dask_config / "coiled.yaml"
    link.symlink_to(tmp_path / "dotfiles" / "deep" / "coiled.yaml")
    refused(link, "does not exist")
    assert not (tmp_path / "dotfiles").exists()


@pytest.mark.parametrize(
    "text, shared",
    [
        (
            "coiled:\n  backend-options:\n    ingress: &r\n      - {ports: [22], cidr: 10.0.0.0/8}\n"
            "mytool:\n  allowed: *r\n",
            "coiled.backend-options.ingress",
        ),
        (
            "base: &b\n  ingress: [{ports: [22], cidr: 10.0.0.0/8}]\n"
            "coiled:\n  backend-options: *b\n",
            "coiled.backend-options",
        ),
        (
            "base: &b\n  region: x\ncoiled:\n  backend-options:\n    <<: *b\n    ingress: []\n",
            "merge key",
        ),
    ],
)
def test_an_anchor_shared_with_another_key_is_refused(dask_config, text, shared):
    path = dask_config / "coiled.yaml"
    path.write_text(text)
    refused(path, shared)


def test_a_save_killed_before_its_rename_leaves_a_file_the_next_save_removes(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text("coiled:\n  token: abc\n")
    # The kill lands between writing the temporary file and renaming it (os.replace).
    code = textwrap.dedent(f"""\
        import os, signal
        from coiled_jupyter.config_file import save_config
        from coiled_jupyter.rules import parse_ingress
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        save_config(parse_ingress([{{"ports": [22], "cidr": "10.9.0.0/16"}}]), path={str(path)!r})
        """)
    killed = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    [left] = [p for p in dask_config.iterdir() if p.name != "coiled.yaml"]
    assert left.name.startswith(".coiled.yaml.coiled-jupyter-") and left.suffix == ".tmp"
    assert path.read_text() == "coiled:\n  token: abc\n"
    save_config(RULES, path=path)
    assert sorted(p.name for p in dask_config.iterdir()) == ["coiled.yaml"]
    assert config_layer().ingress == RULES


# --------------------------------------------------------------------------------------------------
# Byte for byte


def owned_free(text: str) -> list[str]:
    """The lines of ``text`` that are not ours: everything but the 'ingress:' line and the items of
    its list (comment lines of their own inside it stay) and the toggle's line."""
    lines, out, inside = text.splitlines(keepends=True), [], None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if inside is not None and stripped and (stripped.startswith("-") or indent > inside):
            if stripped.startswith("#"):  # a comment line inside the list stays (at its end)
                out.append(line)
            continue
        inside = None
        if stripped.startswith(("ingress:", "use_scheduler_public_ip:")):
            inside = indent if stripped.startswith("ingress:") else None
            continue
        out.append(line)
    return out


_OTHER_KEYS = [
    "distributed:\n  scheduler:   {allowed-failures:  5,  work-stealing: on}\n",
    "array:\n    chunk-size: '128MiB'   # four spaces, quoted\n",
    "# a comment of its own\n",
    "\n",
    'labextension: {factory: {module: "dask_cloudprovider.aws", class: EC2Cluster}}\n',
    "temporary-directory: ~\n",
    "odd:    spacing\n",
    "list:\n- a\n-   b\n",
]
# Other tools' keys before and after the coiled block (no key twice: that is refused).
_BEFORE = st.lists(st.sampled_from(_OTHER_KEYS), max_size=3, unique=True)
_AFTER = st.lists(
    st.sampled_from([key.replace(":", "-2:", 1) if ":" in key else key for key in _OTHER_KEYS]),
    max_size=3,
    unique=True,
)
_COILED_KEY = st.sampled_from(
    [
        '  token:    "abc123-secret"  # kept as typed\n',
        "  # keep this secret\n",
        "  server: https://cloud.coiled.io\n",
        "  account:  my-team\n",
        "  tags: {team:  data}\n",
    ]
)
_INGRESS = st.sampled_from(
    [
        "    ingress:\n      - ports: [1, 2, 3]  # the lab\n        cidr: 192.0.2.0/24\n",
        "    ingress:\n      - {ports: [8786], cidr: 10.1.0.0/16}\n      # inside the list\n"
        "      - {ports: [22], cidr: 10.3.0.0/16}\n",
        "    ingress: [{ports: [8786], cidr: 10.1.0.0/16}]\n",
        "    ingress: []\n",
        "    ingress:\n",
        "",
    ]
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    before=_BEFORE,
    coiled=st.lists(_COILED_KEY, max_size=3, unique=True),
    ingress=_INGRESS,
    after_list=st.sampled_from(["", "    # after the list\n", "    region_name:   us-east-2\n"]),
    after=_AFTER,
    bom=st.booleans(),
    crlf=st.booleans(),
    toggle=st.sampled_from([None, True, False]),
)
def test_save_changes_no_byte_it_does_not_own(
    dask_config, before, coiled, ingress, after_list, after, bom, crlf, toggle
):
    text = (
        "".join(before)
        + "coiled:\n"
        + "".join(coiled)
        + "  backend-options:\n    region:  us-east-1\n"
        + ingress
        + after_list
        + "".join(after)
    )
    if crlf:
        text = text.replace("\n", "\r\n")
    raw = ("\ufeff" if bom else "") + text
    path = dask_config / "coiled.yaml"
    path.write_bytes(raw.encode("utf-8"))
    save_config(RULES, toggle)
    written = path.read_bytes().decode("utf-8")
    assert written.startswith(
        ("\ufeff" if bom else "") + "".join(before).replace("\n", "\r\n" if crlf else "\n")
    )
    assert owned_free(written.lstrip("\ufeff")) == owned_free(text)
    if crlf:
        assert "\n" not in written.replace("\r\n", "")
    data = yaml.safe_load(written.lstrip("\ufeff"))
    assert parse_ingress(data["coiled"]["backend-options"]["ingress"]) == RULES
    assert config_layer().ingress == RULES
