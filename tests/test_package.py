"""The package's public surface: every advertised name resolves, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import coiled_jupyter


@pytest.mark.parametrize("name", coiled_jupyter.__all__)
def test_every_public_name_resolves(name):
    assert getattr(coiled_jupyter, name) is not None


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        coiled_jupyter.nothing_here  # noqa: B018


def test_importing_the_package_loads_no_cloud_library():
    code = (
        "import sys, coiled_jupyter; "
        "print(sorted(m for m in ('boto3', 'botocore', 'moto', 'distributed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
