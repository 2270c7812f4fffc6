#!/usr/bin/env bash
# Install into .venv, lint, type-check the package (it ships py.typed) and run the whole test suite (unit, doctests,
# Lightning end-to-end, real MiniLM on real data where found).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
# The real SST-2/Rotten Tomatoes files: $LIGHTNING_INFLECT_DATA as given (a wrong path fails the data tests), else
# ../shared/data where it exists; without either, the tests that need them skip (tests/_data.py) and the rest run.
if [ -z "${LIGHTNING_INFLECT_DATA:-}" ] && [ -d ../shared/data ]; then
    LIGHTNING_INFLECT_DATA="$(cd ../shared/data && pwd)"
    export LIGHTNING_INFLECT_DATA
fi
export HF_HUB_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy lightning_inflect --ignore-missing-imports
.venv/bin/python -m pytest -q "$@"
