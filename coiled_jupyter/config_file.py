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

import glob
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from .errors import ConfigFileError
from .rules import Rule, to_coiled
from .settings import config_path, option
from .state import file_lock, lock_name
from .strict_yaml import excerpt


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
    if asked.is_symlink() and not os.path.lexists(target):
        raise ConfigFileError(
            f"{asked} is a link to {target}, which does not exist; create that file or remove "
            "the link, nothing was written."
        )
    digest = hashlib.sha256(str(target).encode()).hexdigest()[:16]
    with file_lock(
        lock_name("dask-config", digest),
        timeout=float(option("lock-timeout")),
        what=f"another kernel's save to {target}",
    ):
        _write(target, ingress, use_scheduler_public_ip)
    return asked


def _write(target: Path, ingress: list[Rule] | None, use_scheduler_public_ip: bool | None) -> None:
    text, mode = _read(target)
    edit = _Edit(text, target)
    if ingress is not None:
        edit.remove_firewall()
        edit.set_ingress(to_coiled(ingress))
    if use_scheduler_public_ip is not None:
        edit.set_toggle(bool(use_scheduler_public_ip))
    _replace(target, edit.bom + edit.text, mode)


# A temporary file of ours: ".<name>.coiled-jupyter-<pid>.tmp" beside the file. A save killed between
# writing and renaming leaves one behind; the next save removes those whose process is gone.
_TEMP_MARK = ".coiled-jupyter-"


def _replace(target: Path, text: str, mode: int) -> None:
    """Write ``text`` to a temporary file beside ``target`` and rename it over ``target``."""
    prefix = f".{target.name}{_TEMP_MARK}{os.getpid()}-"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(target)
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
    except OSError as error:
        raise _unwritable(target, error) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
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


def _remove_stale_temporaries(target: Path) -> None:
    """Remove temporary files of earlier saves of ``target`` whose process no longer runs (killed
    between writing and renaming); the lock is held, so no other save is writing one now."""
    stem = f".{target.name}{_TEMP_MARK}"
    for path in target.parent.glob(f"{glob.escape(stem)}*.tmp"):
        pid = path.name[len(stem) :].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(target: Path) -> tuple[str, int]:
    """The file's text and mode, read within the size limit; a file that is not a regular file (a
    FIFO would block the read forever) or not UTF-8 is refused. A missing file is empty, mode 600."""
    from .strict_yaml import FILE_LIMITS

    try:
        handle = os.open(target, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return "", 0o600
    except OSError as error:
        raise _unreadable(target, error) from None
    try:
        status = os.fstat(handle)
        if not stat.S_ISREG(status.st_mode):
            raise ConfigFileError(
                f"{target} is not a regular file (a pipe, device or folder); save writes only a "
                "plain file, nothing was written."
            )
        data = (
            os.read(handle, FILE_LIMITS.bytes + 1) if status.st_size <= FILE_LIMITS.bytes else b""
        )
        if status.st_size > FILE_LIMITS.bytes or len(data) > FILE_LIMITS.bytes:
            raise ConfigFileError(
                f"{target} is larger than the {FILE_LIMITS.bytes // 1024} KiB this tool reads; a "
                "Dask config file of that size is not one to edit here, nothing was written."
            )
    except OSError as error:
        raise _unreadable(target, error) from None
    finally:
        os.close(handle)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigFileError(
            f"{target} is not UTF-8 text (byte {error.start + 1}); YAML files are UTF-8, so fix or "
            "move it, nothing was written."
        ) from None
    return text, stat.S_IMODE(status.st_mode)


def _unreadable(target: Path, error: OSError) -> ConfigFileError:
    return ConfigFileError(
        f"{target} cannot be read ({error.strerror or error}); check its permissions, nothing "
        "was written."
    )


def _unwritable(target: Path, error: OSError) -> ConfigFileError:
    return ConfigFileError(
        f"{target} cannot be written ({error.strerror or error}); the file is as it was."
    )


# --------------------------------------------------------------------------------------------------
# Editing the text: only the spans of our keys change


class _Edit:
    """The file's text, changed one key at a time by replacing only the characters of that key's
    value (or inserting its lines): every other byte, the BOM and the line ends stay as they are.
    Each change reads the text again, so that the next one works on what the last one wrote."""

    def __init__(self, text: str, target: Path):
        # libyaml's positions start after a BOM, PyYAML's at it: the BOM is kept aside.
        self.bom = "\ufeff" if text.startswith("\ufeff") else ""
        self.text = text[len(self.bom) :]
        self.target = target
        self._composed = None  # (the text, what _root made of it): composed once per change
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self._check_parses()
        self.indent = _guess_indent(text)

    # ----------------------------------------------------------------------------------------------
    # Reading

    def _check_parses(self) -> None:
        """Refuse a file that is not valid YAML, a key twice in one mapping included (PyYAML keeps
        the last, so which one Dask uses is not what the person sees), before any change."""
        import yaml

        root, _ = self._root()
        for node in _walk(root) if root is not None else ():
            if not isinstance(node, yaml.MappingNode):
                continue
            seen = set()
            for key, _value in node.value:
                name = (key.tag, key.value) if isinstance(key, yaml.ScalarNode) else id(key)
                if name in seen:
                    raise self.refusal(
                        f"cannot be parsed as YAML (the key {excerpt(key.value)} is there twice, "
                        f"line {key.start_mark.line + 1})"
                    )
                seen.add(name)

    def _root(self):
        """The document's node (the composer keeps where each node starts and ends; libyaml's when
        PyYAML has it), and the nodes reached more than once (through an alias)."""
        import yaml

        if self._composed is not None and self._composed[0] is self.text:
            return self._composed[1]
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            root = yaml.compose(self.text, Loader=loader)
        except yaml.YAMLError as error:
            raise self.refusal(f"cannot be parsed as YAML ({first_line(error)})") from None
        except RecursionError:
            raise self.refusal("nests too deeply to be read") from None
        self._composed = (self.text, (root, _shared_nodes(root)))
        return self._composed[1]

    def _mapping(self, create: tuple[str, ...]):
        """The mapping at ``create`` (e.g. ``("coiled", "backend-options")``): ``(node, None)`` when
        found, else where it is missing and the names missing from there: ``(parent, names)``, or
        ``((key, value), names)`` for a key whose value is null or ``{}``."""
        import yaml

        root, shared = self._root()
        self.shared = shared
        if root is None or _is_null(root) or (_is_flow(root) and not root.value):
            return root, create
        if not isinstance(root, yaml.MappingNode):
            raise self.refusal("does not hold a mapping at the top")
        node = root
        for depth, name in enumerate(create):
            self._check_editable(node, create[:depth])
            pair = _find(node, name)
            if pair is None:
                return node, create[depth:]
            value = pair[1]
            if _is_null(value) or (_is_flow(value) and not value.value):
                return pair, create[depth + 1 :]
            if not isinstance(value, yaml.MappingNode):
                raise ConfigFileError(
                    f"'{name}' in the Dask config file is not a mapping; fix it by hand, "
                    "nothing was written."
                )
            node = value
        self._check_editable(node, create)
        return node, None

    def _check_editable(self, node, path: tuple[str, ...]) -> None:
        """Refuse a mapping this save would change that is shared through an alias, or written in
        flow style, or holds a merge key: a change there would reach other keys or other text."""
        if not path:
            return
        name = ".".join(path)
        if id(node) in self.shared:
            raise self.refusal(
                f"shares '{name}' with another key through an anchor (&) and alias (*), so saving "
                "would change that key too; write it out in full"
            )
        if _is_flow(node):
            raise self.refusal(f"writes '{name}' in flow style ({{...}}); write it as a block")
        if any(key.value == "<<" and not key.style for key, _ in node.value):
            raise self.refusal(f"has a merge key (<<) in '{name}'; write its keys out in full")

    def _check_value(self, value, name: str) -> None:
        for node in _walk(value):
            if id(node) in self.shared:
                raise self.refusal(
                    f"shares '{name}' with another key through an anchor (&) and alias (*), so "
                    "saving would change that key too; write it out in full"
                )

    def refusal(self, problem: str) -> ConfigFileError:
        return ConfigFileError(f"{self.target} {problem}; fix or move it, nothing was written.")

    # ----------------------------------------------------------------------------------------------
    # Changing

    def remove_firewall(self) -> None:
        """Remove the deprecated ``coiled.backend-options.firewall`` (ingress replaces it), keeping
        the comment lines inside it."""
        found, missing = self._mapping(("coiled", "backend-options"))
        if missing is not None:
            return
        pair = _find(found, "firewall")
        if pair is None:
            return
        key, value = pair
        self._check_value(value, "coiled.backend-options.firewall")
        start = self._line_start(key.start_mark.index)
        end = self._after_line(_content_end(value))
        kept = [line for line in self.text[start:end].splitlines(keepends=True) if _comment(line)]
        self._splice(start, end, "".join(kept))

    def set_ingress(self, items: list[dict]) -> None:
        pair = self._entry(("coiled", "backend-options"), "ingress", items)
        if pair is not None:
            self._replace_list(*pair, items)

    def set_toggle(self, public_ip: bool) -> None:
        pair = self._entry(("coiled",), "use_scheduler_public_ip", public_ip)
        if pair is None:
            return
        value = pair[1]
        word = "true" if public_ip else "false"
        if _is_block(value):
            raise self.refusal("holds a list or mapping as coiled.use_scheduler_public_ip")
        if value.start_mark.index == value.end_mark.index:
            self._splice(value.start_mark.index, value.end_mark.index, f" {word}")
        else:
            self._splice(value.start_mark.index, value.end_mark.index, word)

    def _entry(self, path: tuple[str, ...], name: str, value):
        """The (key, value) nodes of ``name`` in the mapping at ``path``, to be changed; or None
        when it was missing and has been added with ``value``."""
        found, missing = self._mapping(path)
        if missing is not None:
            self._add(found, missing, (name, value))
            return None
        pair = _find(found, name)
        if pair is None:
            self._add(found, (), (name, value))
            return None
        self._check_value(pair[1], ".".join((*path, name)))
        return pair

    def _add(self, place, missing: tuple[str, ...], entry: tuple[str, object]) -> None:
        """Add ``missing`` mappings and ``entry`` (a key and its value) where ``place`` says: the
        whole document (None, or a null or ``{}`` root), a key whose value is null or ``{}`` (a
        (key, value) pair), or the end of a block mapping's lines."""
        import yaml

        if place is None or (
            isinstance(place, yaml.Node)
            and not (isinstance(place, yaml.MappingNode) and place.value)
        ):
            lines = self._lines(0, (*missing, entry))
            if place is None:
                prefix = "" if not self.text or self.text.endswith(("\n", "\r")) else self.newline
                self._splice(
                    len(self.text), len(self.text), prefix + self._joined(lines) + self.newline
                )
            else:
                self._splice(place.start_mark.index, place.end_mark.index, self._joined(lines))
            return
        if isinstance(place, tuple):  # a key whose value is null or {}
            key, value = place
            column = key.start_mark.column + self.indent["mapping"]
            lines = self._lines(column, (*missing, entry))
            self._splice(self._after_colon(key), value.end_mark.index, "")
            at = self._line_end(key.end_mark.index)
            self._splice(at, at, "".join(self.newline + line for line in lines))
            return
        column = place.value[0][0].start_mark.column
        lines = self._lines(column, (*missing, entry))
        at = self._line_end(_content_end(place))
        self._splice(at, at, "".join(self.newline + line for line in lines))

    def _lines(self, column: int, path: tuple) -> list[str]:
        """The lines of ``path`` (names of mappings to open, then the (key, value) entry) with the
        first key at ``column``."""
        *names, (key, value) = path
        lines = []
        for name in names:
            lines.append(" " * column + f"{name}:")
            column += self.indent["mapping"]
        if isinstance(value, list):
            if not value:
                return [*lines, " " * column + f"{key}: []"]
            dash = column + self.indent["offset"]
            content = column + self.indent["sequence"]
            return [*lines, " " * column + f"{key}:", *_block_items(value, dash, content)]
        return [*lines, " " * column + f"{key}: {'true' if value else 'false'}"]

    def _replace_list(self, key, value, items: list[dict]) -> None:
        """Replace the ingress value: a block list item by item (an item that stays keeps its text
        and comments; comment lines of removed items move to the end of the list), anything written
        in flow style by the new list in flow style, on the same lines."""
        import yaml

        if _is_flow(value) or (isinstance(value, yaml.ScalarNode) and not _is_null(value)):
            self._splice(value.start_mark.index, value.end_mark.index, _flow_list(items))
            return
        if _is_null(value):
            if not items:
                self._splice(self._after_colon(key), value.end_mark.index, " []")
                return
            self._splice(self._after_colon(key), value.end_mark.index, "")
            at = self._line_end(key.end_mark.index)
            dash = key.start_mark.column + self.indent["offset"]
            content = key.start_mark.column + self.indent["sequence"]
            lines = _block_items(items, dash, content)
            self._splice(at, at, "".join(self.newline + line for line in lines))
            return
        if not isinstance(value, yaml.SequenceNode):
            raise self.refusal(
                "holds a mapping as coiled.backend-options.ingress, which save does not rewrite; "
                "write it as a list"
            )
        start = self._line_end(key.end_mark.index)
        end = self._line_end(_content_end(value))
        dash = value.start_mark.column
        content = value.value[0].start_mark.column if value.value else dash + 2
        old = [(_plain(item), self._item_text(item)) for item in value.value]
        kept_spans = []
        out: list[str] = []
        for item in items:
            same = next((entry for entry in old if entry[0] == item), None)
            if same is not None:
                old.remove(same)
                out.append(same[1][0])
                kept_spans.append(same[1][1])
            else:
                out.extend(_block_items([item], dash, content))
        moved = [
            line.rstrip("\r\n")
            for offset, line in self._lines_between(start, end)
            if _comment(line) and not any(a <= offset < b for a, b in kept_spans)
        ]
        if not items:
            self._splice(start, end, "".join(self.newline + line for line in moved))
            self._splice(self._after_colon(key), self._after_colon(key), " []")
            return
        self._splice(start, end, "".join(self.newline + line for line in out + moved))

    def _item_text(self, item) -> tuple[str, tuple[int, int]]:
        """A block list item as written, from its line's start to the end of its last line."""
        start = self._line_start(item.start_mark.index)
        end = self._line_end(_content_end(item))
        return self.text[start:end], (start, end)

    def _lines_between(self, start: int, end: int):
        offset = start
        for line in self.text[start:end].splitlines(keepends=True):
            yield offset, line
            offset += len(line)

    # ----------------------------------------------------------------------------------------------
    # Text positions

    def _after_colon(self, key) -> int:
        """Just after the ':' that follows ``key``."""
        return self.text.index(":", key.end_mark.index) + 1

    def _splice(self, start: int, end: int, new: str) -> None:
        self.text = self.text[:start] + new + self.text[end:]

    def _line_start(self, index: int) -> int:
        return max(self.text.rfind("\n", 0, index), self.text.rfind("\r", 0, index)) + 1

    def _line_end(self, index: int) -> int:
        """The index of the line break ending the line that holds ``index - 1`` (the last character
        of a value ending at ``index``)."""
        index = max(index - 1, 0)
        ends = [i for i in (self.text.find("\r", index), self.text.find("\n", index)) if i != -1]
        return min(ends) if ends else len(self.text)

    def _after_line(self, index: int) -> int:
        end = self._line_end(index)
        if self.text.startswith("\r\n", end):
            return end + 2
        return end + 1 if end < len(self.text) else end

    def _joined(self, lines: list[str]) -> str:
        return self.newline.join(lines)


def _find(mapping, name: str):
    """The (key, value) nodes of ``name`` in a mapping node ('-' and '_' alike), or None."""
    wanted = name.replace("_", "-")
    for key, value in mapping.value:
        if getattr(key, "value", None) is not None and str(key.value).replace("_", "-") == wanted:
            return key, value
    return None


def _is_null(node) -> bool:
    import yaml

    return (
        isinstance(node, yaml.ScalarNode)
        and not node.style
        and node.value in ("", "~", "null", "Null", "NULL")
    )


def _is_flow(node) -> bool:
    import yaml

    return isinstance(node, yaml.CollectionNode) and bool(node.flow_style)


def _is_block(node) -> bool:
    import yaml

    return isinstance(node, yaml.CollectionNode) and not node.flow_style


def _content_end(node) -> int:
    """Where a node's own text ends: a block collection's end mark lies at the next token, after
    any comment lines that follow it, so its last child's end is taken instead."""
    import yaml

    while _is_block(node) and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    return node.end_mark.index


def _walk(node):
    """``node`` and every node below it, each once."""
    import yaml

    seen, stack = set(), [node]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.MappingNode):
            stack.extend(child for pair in node.value for child in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _shared_nodes(root) -> set[int]:
    """The nodes reached from more than one place (an anchor with its aliases)."""
    import yaml

    if root is None:
        return set()
    seen: set[int] = set()
    shared: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            shared.add(id(node))
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend(child for pair in node.value for child in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return shared


def _comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _plain(node):
    """A node as plain Python values (YAML 1.1, as Dask reads it), to compare an item in the file
    with one to write."""
    import yaml

    return yaml.SafeLoader("").construct_document(node)


def _block_items(items: list[dict], dash: int, content: int) -> list[str]:
    """Rules as block list items: ``- ports: [8786]`` with the dash at ``dash`` and the keys at
    ``content``; ports in flow style, as in Coiled's documentation."""
    lines = []
    for item in items:
        for index, (key, value) in enumerate(item.items()):
            text = f"{key}: {_flow_list(value) if isinstance(value, list) else _scalar(value)}"
            if index == 0:
                lines.append(" " * dash + "-" + " " * (content - dash - 1) + text)
            else:
                lines.append(" " * content + text)
    return lines


def _flow_list(values: list) -> str:
    parts = []
    for value in values:
        if isinstance(value, dict):
            parts.append(
                "{"
                + ", ".join(
                    f"{k}: {_flow_list(v) if isinstance(v, list) else _scalar(v, flow=True)}"
                    for k, v in value.items()
                )
                + "}"
            )
        else:
            parts.append(_scalar(value, flow=True))
    return "[" + ", ".join(parts) + "]"


_FLOW_INDICATORS = set(",[]{}:")


def _scalar(value, *, flow: bool = False) -> str:
    """A value as YAML that both this tool's strict reader and Dask's reader (YAML 1.1) read back
    as the same value: plain where it is unambiguous, else double-quoted."""
    import json

    import yaml

    from .strict_yaml import StrictYAMLError, load

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    plain = (
        text
        and text == text.strip()
        and text[0] not in "-?:,[]{}#&*!|>'\"%@`"
        and ": " not in text
        and " #" not in text
        and text.isprintable()
        and not (flow and _FLOW_INDICATORS & set(text))
    )
    if plain:
        try:
            plain = load(text, "value") == text and yaml.safe_load(text) == text
        except (StrictYAMLError, yaml.YAMLError):
            plain = False
    return text if plain else json.dumps(text)


def _guess_indent(text: str) -> dict:
    """The indentation a YAML file uses: ``mapping`` (a child key's indent), ``sequence`` (a list
    item's content, from its parent key) and ``offset`` (the dash, from its parent key)."""
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


def first_line(error: Exception) -> str:
    """The first line of an error's message (parsers' messages run on with excerpts)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
