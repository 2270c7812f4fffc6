#!/usr/bin/env bash
# Install into .venv, lint, type-check the package (it ships py.typed) and run the whole test suite (unit, doctests,
# Lightning end-to-end, real MiniLM on real data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export LIGHTNING_INFLECT_DATA=${LIGHTNING_INFLECT_DATA:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy lightning_inflect --ignore-missing-imports
.venv/bin/python -m pytest -q "$@"
