#!/usr/bin/env bash
# Install into .venv and run the demo: diagnose -> detect -> inject -> evaluate on the real MiniLM, offline.
# Uses SST-2 -> Rotten Tomatoes from $LIGHTNING_INFLECT_DATA (default ../shared/data) when present, else a built-in
# synthetic task. Extra arguments go to `lightning-inflect demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
if [ -z "${LIGHTNING_INFLECT_DATA:-}" ] && [ -d ../shared/data ]; then
  export LIGHTNING_INFLECT_DATA=$(cd ../shared/data && pwd)
fi
export HF_HUB_OFFLINE=1
.venv/bin/lightning-inflect demo "$@"
