"""Imports point one way: the pure packages never pull in Lightning or peft."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "package",
    [
        "lightning_inflect",
        "lightning_inflect.functional",
        "lightning_inflect.architectures",
        "lightning_inflect.capture",
        "lightning_inflect.selection",
        "lightning_inflect.injection",
    ],
)
def test_pure_packages_do_not_import_lightning_or_peft(package):
    code = (
        f"import sys, {package}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'peft'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{package} imported {out}"


def test_functional_does_not_import_transformers():
    code = "import sys, lightning_inflect.functional; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
