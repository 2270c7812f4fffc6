#!/usr/bin/env bash
# The capture engine's GPU measurements in one prepared run (issue: measure on CUDA when a GPU is lent).
# Usage on the lent machine, from the repository root:  bash scripts/gpu-check.sh [OUT_DIR]
# Each step has its own time limit, so a slow step cannot eat the whole lease; outputs go to OUT_DIR (default $OUT or
# ./gpu-check). SMOKE=1 runs tiny sizes on whatever device there is (a check of this script on a CPU machine).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu-check}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
if [ "${SMOKE:-0}" = 1 ]; then
  DEV=auto; PREC=fp32; BS=4; T=32; LONG_T=256; LAYERS=2; REPEATS=2; STEPS=6; LIMIT=300
  KERNEL_T=256; KERNEL_DTYPE=float32
else
  DEV=cuda; PREC=bf16; BS=32; T=128; LONG_T=8192; LAYERS=24; REPEATS=15; STEPS=40; LIMIT=180
  KERNEL_T=2048,8192; KERNEL_DTYPE=bfloat16
fi
run() {  # name, command...
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT_DIR/summary.txt"
  timeout "$LIMIT" "$@" > "$OUT_DIR/$name.md" 2> "$OUT_DIR/$name.err"
  echo "   exit $?" | tee -a "$OUT_DIR/summary.txt"
  tail -n 25 "$OUT_DIR/$name.md" | tee -a "$OUT_DIR/summary.txt"
}
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT_DIR/summary.txt"
run logging_step "$PY" benchmarks/logging_step.py --shape bert-base --batch-size "$BS" --seq-len "$T" \
  --device "$DEV" --precision "$PREC" --repeats "$REPEATS" --trainer-steps "$STEPS"
run long_context "$PY" benchmarks/logging_step.py --long-context --seq-len "$LONG_T" --layers "$LAYERS" \
  --device "$DEV" --precision "$PREC" --repeats 3 --warmup 1
run entropy_kernel "$PY" benchmarks/entropy_kernel.py --device "$([ "$DEV" = auto ] && echo cpu || echo "$DEV")" \
  --dtype "$KERNEL_DTYPE" --seq-lens "$KERNEL_T" --repeats 5
