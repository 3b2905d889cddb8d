"""Writing Dask's config file (``coiled.yaml``): only our keys change, nothing else is lost.

People keep their Coiled token and hand-written comments in this file, often in a dotfiles repository
where ``~/.config/dask/coiled.yaml`` is a symlink, and several kernels may save at the same moment.
So a save keeps every key and comment it does not own (also the comment after the ``ingress:`` list,
which the YAML library glues to the list's last item), writes through a symlink (the link stays, its
target is replaced), replaces the file atomically (a temporary file in the same folder, then a rename)
with its mode, refuses a file it cannot parse, and holds a lock (:func:`coiled_jupyter.state.file_lock`)
while it reads and writes, so that two kernels saving different keys both keep their change.

Only ``coiled.backend-options.ingress``, ``coiled.backend-options.firewall`` (deprecated, removed when
ingress is written) and ``coiled.use_scheduler_public_ip`` are owned; they hold no secrets.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import ConfigFileError
from .rules import Rule, to_coiled
from .settings import config_path, key_spelling, option
from .state import file_lock, lock_name


def save_config(
    ingress: list[Rule] | None = None,
    use_scheduler_public_ip: bool | None = None,
    *,
    path: Path | str | None = None,
) -> Path:
    """Write ingress and the toggle (``None``: leave it as it is) into ``coiled.yaml``.

    Returns the path that was asked for (the link, for a symlinked file). Comments on a line of their
    own are never dropped; an end-of-line comment belongs to its rule and stays while the rule stays.
    """
    asked = Path(path) if path is not None else config_path()
    target = Path(os.path.realpath(asked))
    digest = hashlib.sha256(str(target).encode()).hexdigest()[:16]
    with file_lock(
        lock_name("dask-config", digest),
        timeout=float(option("lock-timeout")),
        what=f"another kernel's save to {target}",
    ):
        _write(target, ingress, use_scheduler_public_ip)
    return asked


def _write(target: Path, ingress: list[Rule] | None, use_scheduler_public_ip: bool | None) -> None:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import YAMLError

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    header = ""
    if target.exists():
        text = _read(target)
        # ruamel re-emits the whole file: with the file's own indentation, lines we do not own (the
        # token) come out byte for byte.
        yaml.indent(**_guess_indent(text))
        try:
            data = yaml.load(text) if text.strip() else CommentedMap()
        except YAMLError as error:
            raise ConfigFileError(
                f"{target} cannot be parsed as YAML ({first_line(error)}); fix or "
                "move it, nothing was written."
            ) from None
        if data is None:  # ruamel drops the comments of a file that holds nothing else
            data = CommentedMap()
            header = "".join(
                line for line in text.splitlines(keepends=True) if line.lstrip().startswith("#")
            )
        if not isinstance(data, dict):
            raise ConfigFileError(
                f"{target} does not hold a mapping at the top; fix or move it, nothing was written."
            )
        mode = target.stat().st_mode & 0o7777
    else:
        data = CommentedMap()
        mode = 0o600
    coiled = _child(data, "coiled")
    if ingress is not None:
        backend_options = _child(coiled, "backend-options")
        _replace_list(backend_options, key_spelling(backend_options, "ingress"), to_coiled(ingress))
        firewall = key_spelling(backend_options, "firewall")
        if firewall in backend_options:
            _keep_comments_of_removed(backend_options, firewall)
    if use_scheduler_public_ip is not None:
        coiled[key_spelling(coiled, "use_scheduler_public_ip")] = bool(use_scheduler_public_ip)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise _unwritable(target, error) from None
    try:
        with os.fdopen(handle, "w") as out:
            out.write(header if not header or header.endswith("\n") else header + "\n")
            yaml.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except OSError as error:
        Path(temp).unlink(missing_ok=True)
        raise _unwritable(target, error) from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _read(target: Path) -> str:
    try:
        return target.read_text()
    except OSError as error:
        raise ConfigFileError(
            f"{target} cannot be read ({error.strerror or error}); check its permissions, nothing "
            "was written."
        ) from None


def _unwritable(target: Path, error: OSError) -> ConfigFileError:
    return ConfigFileError(
        f"{target} cannot be written ({error.strerror or error}); the file is as it was."
    )


# --------------------------------------------------------------------------------------------------
# Comments: ruamel attaches a comment to the key or item before it, so replacing a list would drop
# the comments inside it and the lines right after it.


def _replace_list(mapping, key: str, items: list[dict]) -> None:
    """Set ``mapping[key]`` to ``items``, keeping each unchanged item as it was (with its comments),
    the comment lines of removed items, and the lines after the old list, which move to the new end."""
    from ruamel.yaml.comments import CommentedSeq

    old = mapping.get(key)
    old_items = list(old) if isinstance(old, list) else []
    after = _pop_own_lines(old_items[-1]) if old_items else []
    new = CommentedSeq()
    for item in items:
        same = next((o for o in old_items if _plain(o) == item), None)
        if same is not None:
            old_items.remove(same)
        new.append(same if same is not None else _as_written(item))
    kept = [line for removed in old_items for line in _pop_own_lines(removed, every=True)]
    mapping[key] = new
    _append_lines(mapping, key, new, kept + after)


def _as_written(item: dict):
    """A rule for the file, its ports in flow style as in Coiled's documentation: ``[8786, 8787]``."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    ports = CommentedSeq(item["ports"])
    ports.fa.set_flow_style()
    return CommentedMap({**item, "ports": ports})


def _keep_comments_of_removed(mapping, key: str) -> None:
    """Remove ``mapping[key]`` but keep the comment lines inside and after its value."""
    value = mapping[key]
    lines = _pop_own_lines(value, every=True)
    keys = list(mapping)
    previous = keys[keys.index(key) - 1] if keys.index(key) > 0 else None
    lines = _pop_key_lines(mapping, key) + lines
    mapping.pop(key)
    if previous is not None and lines:
        _append_lines(mapping, previous, mapping[previous], lines)


def _plain(value):
    """A ruamel value as plain Python, to compare an item in the file with one to write."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _tokens(node):
    """Every comment slot in ``node`` and below, as (list holding the token, index) pairs."""
    found = []
    ca = getattr(node, "ca", None)
    if ca is not None:
        for slots in ca.items.values():
            for index, token in enumerate(slots or []):
                if token is not None and not isinstance(token, list):
                    found.append((slots, index))
        for holder in (ca.comment, ca.end):
            for index, token in enumerate(holder or []):
                if token is not None and not isinstance(token, list):
                    found.append((holder, index))
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        found.extend(_tokens(child))
    return found


def _own_lines(value: str) -> tuple[str, list[str]]:
    """A comment token's text split into its end-of-line part and its lines of their own."""
    if "\n" not in value:
        return value, []
    first, rest = value.split("\n", 1)
    return first + "\n", [line + "\n" for line in rest.split("\n") if line.strip()]


def _pop_own_lines(node, *, every: bool = False) -> list[str]:
    """Take the comment lines of their own out of ``node``: those after its last value (the lines
    after a list end up there), or with ``every`` all of them (the node is going away)."""
    slots = _tokens(node)
    if not every:
        slots = slots[-1:]
    lines: list[str] = []
    for holder, index in slots:
        token = holder[index]
        eol, own = _own_lines(token.value)
        if not own:
            continue
        lines.extend(own)
        if eol.strip():
            token.value = eol
        else:
            holder[index] = None
    return lines


def _pop_key_lines(mapping, key: str) -> list[str]:
    slots = mapping.ca.items.get(key) or []
    lines: list[str] = []
    for index, token in enumerate(slots):
        if token is None or isinstance(token, list):
            continue
        _, own = _own_lines(token.value)
        lines.extend(own)
        slots[index] = None
    return lines


def _append_lines(mapping, key: str, value, lines: list[str]) -> None:
    """Put comment lines after ``mapping[key]``'s value (after the last item of a non-empty list)."""
    if not lines:
        return
    from ruamel.yaml.tokens import CommentToken

    holder = mapping
    last_key = key
    if isinstance(value, list) and value and isinstance(value[-1], dict) and value[-1]:
        holder = value[-1]
        last_key = list(holder)[-1]
    slots = holder.ca.items.setdefault(last_key, [None, None, None, None])
    while len(slots) < 4:
        slots.append(None)
    token = slots[2]
    if token is not None:  # after what is already there (an end-of-line comment, or lines)
        token.value = token.value.rstrip("\n") + "\n" + "".join(lines)
    else:
        slots[2] = CommentToken("\n" + "".join(lines), _mark(), None)


def _mark():
    from ruamel.yaml.error import CommentMark

    return CommentMark(0)


def _guess_indent(text: str) -> dict:
    """The indentation a YAML file uses (ruamel's ``mapping``, ``sequence`` and dash ``offset``)."""
    found = {"mapping": None, "sequence": None, "offset": None}
    lines = [
        line.rstrip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for parent, child in zip(lines, lines[1:]):
        if not parent.endswith(":") or parent.lstrip().startswith("- "):
            continue
        depth = len(child) - len(child.lstrip()) - (len(parent) - len(parent.lstrip()))
        item = child.lstrip()
        if item.startswith("- ") and found["sequence"] is None and depth >= 0:
            after = item[2:]
            found["offset"] = depth
            found["sequence"] = depth + 2 + len(after) - len(after.lstrip())
        elif not item.startswith("- ") and found["mapping"] is None and depth > 0:
            found["mapping"] = depth
    if found["sequence"] is None:
        found["offset"], found["sequence"] = 2, 4
    return {"mapping": found["mapping"] or 2, **{k: found[k] for k in ("sequence", "offset")}}


def _child(mapping, key: str):
    from ruamel.yaml.comments import CommentedMap

    spelling = key_spelling(mapping, key)
    node = mapping.get(spelling)
    if node is None:
        node = mapping[spelling] = CommentedMap()
    elif not isinstance(node, dict):
        raise ConfigFileError(
            f"'{key}' in the Dask config file is not a mapping; fix it by hand, "
            "nothing was written."
        )
    return node


def first_line(error: Exception) -> str:
    """The first line of an error's message (parsers' messages run on with excerpts)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
