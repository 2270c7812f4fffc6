#!/usr/bin/env bash
# Install into .venv and fine-tune the real MiniLM on Rotten Tomatoes with the three monitors (TensorBoard logs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export LIGHTNING_INFLECT_DATA=${LIGHTNING_INFLECT_DATA:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1
.venv/bin/python examples/finetune_minilm.py "$@"
