"""Imports point one way: the pure packages never pull in Lightning or peft, the core never pulls in the study."""

import re
import subprocess
import sys
from pathlib import Path

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
        "lightning_inflect.names",
        "lightning_inflect.monitor",
        "lightning_inflect.core",  # the monitors' logic, shared by every training loop's glue
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


@pytest.mark.parametrize("module", ["lightning_inflect.names", "lightning_inflect.monitor"])
def test_the_shared_contract_imports_no_framework(module):
    # for a Hugging Face Trainer front end over the same core: the names and the protocol pull in no training loop
    code = f"import sys, {module}\nprint(sorted(m for m in ('lightning', 'peft', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"{module} imported {out}"


def test_the_hugging_face_front_end_imports_no_lightning():
    # one core, two thin front ends: the HF Trainer integration stands on the core alone
    code = (
        "import sys, lightning_inflect.integrations.transformers\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_functional_does_not_import_transformers():
    code = "import sys, lightning_inflect.functional; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# The study (lightning_inflect.experiments, the command, the report) comes with the `[study]` extra.
STUDY_ONLY = ("matplotlib", "jsonargparse")
_BLOCK_STUDY_EXTRA = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):  # as if the study extra were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Block())
"""


def test_core_and_command_modules_do_not_import_the_study_extra():
    modules = ", ".join(f"lightning_inflect{m}" for m in ("", ".experiments", ".experiments.config", ".cli"))
    top = "{m.split('.')[0] for m in sys.modules}"
    code = f"import sys, {modules}\nprint(','.join(sorted({top} & {set(STUDY_ONLY)!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported {out}"


def test_the_callbacks_do_not_import_jsonargparse():
    # matplotlib may come in through Lightning -> torchmetrics (which plots with it when it is installed), not from us
    code = "import sys, lightning_inflect.callbacks\nprint('jsonargparse' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_the_command_without_the_study_extra_says_what_to_install():
    code = _BLOCK_STUDY_EXTRA.format(blocked=STUDY_ONLY) + "from lightning_inflect.cli import main\nmain(['--help'])\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert 'pip install "lightning-inflect[study]"' in done.stderr and "jsonargparse" in done.stderr


def test_the_report_without_matplotlib_says_what_to_install(tmp_path):
    code = _BLOCK_STUDY_EXTRA.format(blocked=("matplotlib",)) + (
        "from lightning_inflect.experiments.report import write_report\n"
        f"try:\n    write_report({str(tmp_path)!r})\nexcept ModuleNotFoundError as err:\n    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'needs matplotlib, which comes with the study extra: pip install "lightning-inflect[study]"' in out


def test_the_core_install_names_only_the_core_libraries():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    names = lambda specs: {re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower() for spec in specs}  # noqa: E731
    assert names(project["dependencies"]) == {"torch", "lightning", "transformers", "peft", "tensorboard"}
    assert {"matplotlib", "jsonargparse"} <= names(project["optional-dependencies"]["study"])
