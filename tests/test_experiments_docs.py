"""The published results: no machine path in them, and the numbers the tables are built from."""

import json
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
MACHINE_PATH = re.compile(r"^(/|~|[A-Za-z]:[\\/])")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("path", sorted(DOCS.glob("*.json")), ids=lambda p: p.name)
def test_published_json_holds_no_machine_path(path):
    results = json.loads(path.read_text())
    assert [s for s in _strings(results) if MACHINE_PATH.match(s)] == []
    for run in results["runs"]:  # the source model, relative to the run folder REGIME/STRATEGY/seedN
        assert run["source"] == f"../../../source/{run['regime']}/model"
