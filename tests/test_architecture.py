"""The shape of the code: data flows one way, and the core stays free of the front ends' libraries.

The package's import graph is read from the source (module-level and function-level imports alike, so
a lazy import cannot hide a cycle), and checked for cycles and for forbidden edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import coiled_jupyter

PACKAGE = Path(coiled_jupyter.__file__).parent
FRONT_END_LIBRARIES = ("IPython", "ipywidgets", "jupyter_server", "tornado", "traitlets")
# The front ends and the package entry points; everything else is the core.
FRONT_ENDS = ("coiled_jupyter", "coiled_jupyter.magics", "coiled_jupyter.widgets")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports, anywhere in its body: package modules and top-level libraries."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.add(submodule if submodule in known else module)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the package's modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    assert cycle(graph()) is None, " -> ".join(cycle(graph()))


def test_the_cycle_finder_finds_a_lazy_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "os"}}
    assert cycle(edges) == ["a", "b", "c", "a"]


def test_function_level_imports_count(tmp_path):
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from .provision import reconcile\n    import IPython\n")
    found = imports_of("coiled_jupyter.lazy", source, {"coiled_jupyter.provision.reconcile"})
    assert found == {"coiled_jupyter.provision.reconcile", "IPython"}


@pytest.mark.parametrize(
    "name", sorted(n for n in modules() if n not in FRONT_ENDS and ".server" not in n)
)
def test_the_core_imports_no_front_end_library(name):
    edges = graph()
    forbidden = {
        m for m in edges[name] if m.split(".")[0] in FRONT_END_LIBRARIES or m in FRONT_ENDS[1:]
    }
    assert not forbidden, f"{name} imports {sorted(forbidden)}"


def test_settings_never_calls_the_provisioning_core():
    edges = graph()
    for name in ("coiled_jupyter.settings", "coiled_jupyter.rules", "coiled_jupyter.errors"):
        assert not {m for m in edges[name] if m.startswith("coiled_jupyter.provision")}, name


def test_display_knows_no_result_type():
    assert not {m for m in graph()["coiled_jupyter.display"] if m.startswith("coiled_jupyter.")}


# The front ends reach the package only through these (DESIGN.md "Shape of the code"); the magics
# also open the panel (%coiled_firewall), and the server extension's entry point names its routes.
FRONT_END_MODULES = {
    "coiled_jupyter.magics": {"coiled_jupyter.widgets"},
    "coiled_jupyter.widgets": set(),
    "coiled_jupyter.server.handlers": set(),
    "coiled_jupyter.server": {"coiled_jupyter.server.handlers"},
    "coiled_jupyter.__main__": set(),
}
THROUGH = {"coiled_jupyter.session", "coiled_jupyter.display", "coiled_jupyter.errors"}


@pytest.mark.parametrize("name", sorted(FRONT_END_MODULES))
def test_front_ends_import_only_session_display_and_errors(name):
    from_package = {m for m in graph()[name] if m.split(".")[0] == "coiled_jupyter"}
    allowed = THROUGH | FRONT_END_MODULES[name]
    assert from_package <= allowed, f"{name} imports {sorted(from_package - allowed)}"


def test_the_front_end_rule_sees_a_lazy_import(tmp_path):
    source = tmp_path / "widgets.py"
    source.write_text(
        "from . import session\ndef f():\n    from .provision.sandbox import running\n"
    )
    known = {"coiled_jupyter.session", "coiled_jupyter.provision.sandbox"}
    found = imports_of("coiled_jupyter.widgets", source, known)
    assert found - THROUGH == {"coiled_jupyter.provision.sandbox"}


def test_only_the_aws_module_imports_boto():
    edges = graph()
    users = {
        n for n, found in edges.items() if {"boto3", "botocore"} & {m.split(".")[0] for m in found}
    }
    assert users == {"coiled_jupyter.provision.aws"}
