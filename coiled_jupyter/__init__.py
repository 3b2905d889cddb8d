"""coiled_jupyter: lock down the firewall of your Dask clusters from inside a notebook.

The public API is imported lazily, so that ``%load_ext coiled_jupyter`` stays light: boto3, moto and
distributed load on first use, not at import.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "parse_ingress": "coiled_jupyter.rules",
    "IngressError": "coiled_jupyter.rules",
    "Rule": "coiled_jupyter.rules",
    "CoiledJupyterError": "coiled_jupyter.errors",
    "CloudError": "coiled_jupyter.errors",
    "save_config": "coiled_jupyter.config_file",
    "set_backend_options": "coiled_jupyter.provision.account",
    "effective_settings": "coiled_jupyter.session",
    "plan": "coiled_jupyter.session",
    "apply": "coiled_jupyter.session",
    "describe": "coiled_jupyter.session",
    "destroy": "coiled_jupyter.session",
    "scheduler_address": "coiled_jupyter.session",
    "cluster_kwargs": "coiled_jupyter.session",
    "history": "coiled_jupyter.session",
    "undo": "coiled_jupyter.session",
    "rehearse": "coiled_jupyter.session",
    "export_rules": "coiled_jupyter.session",
    "import_rules": "coiled_jupyter.session",
    "guardrails": "coiled_jupyter.session",
    "set_guardrails": "coiled_jupyter.session",
    "clear_guardrail": "coiled_jupyter.session",
    "FirewallPanel": "coiled_jupyter.widgets",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'coiled_jupyter' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted([*globals(), *_PUBLIC])


def _jupyter_labextension_paths() -> list[dict]:
    """Where an editable install finds the built lab extension (a wheel installs it in share/)."""
    return [{"src": "labextension", "dest": "coiled-jupyter"}]


def _jupyter_server_extension_points() -> list[dict]:
    """The REST handlers live in ``coiled_jupyter.server``, imported only by a Jupyter server."""
    return [{"module": "coiled_jupyter.server"}]


def load_ipython_extension(ipython) -> None:
    """``%load_ext coiled_jupyter``: register the magics."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext coiled_jupyter``: remove the magics."""
    from .magics import unload_ipython_extension as unload

    unload(ipython)
