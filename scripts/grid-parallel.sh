#!/usr/bin/env bash
# A grid (default: the `paper` preset) on one GPU in parallel processes: both source models at once, then one `grid`
# process per regime and seed as soon as that regime's source model is saved; at the end `grid --collect-only` writes
# the tables.
# MiniLM at batch 32 leaves a GPU mostly idle, so several processes share it well.
#
# Usage: scripts/grid-parallel.sh OUT [DEADLINE_S] [options for `source` and `grid`, e.g. --model PATH]
#   DEADLINE_S  stop every process this many seconds after the start (the tables are then partial; a re-run
#               resumes: finished source models and cells are skipped). Default: no deadline.
#   Environment: PRESET (default paper), REGIMES (default "under over"), SEEDS (default "0 1 2"), STRATEGIES (a
#   list for --strategies, default: all, in the grid's order), LI (the command, default lightning-inflect).
set -u
if [ $# -lt 1 ]; then sed -n 2,12p "$0"; exit 2; fi
OUT_DIR=$1; shift
DEADLINE_S=0
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then DEADLINE_S=$1; shift; fi
LI=${LI:-lightning-inflect}
PRESET=${PRESET:-paper}
REGIMES=${REGIMES:-under over}
SEEDS=${SEEDS:-0 1 2}
STRAT=()
if [ -n "${STRATEGIES:-}" ]; then STRAT=(--strategies "$STRATEGIES"); fi
T0=$(date +%s)
LOGS=$OUT_DIR/logs
mkdir -p "$LOGS"
left() {  # seconds to the deadline, for `timeout` (0: none)
  [ "$DEADLINE_S" -eq 0 ] && { echo 0; return; }
  local n=$((T0 + DEADLINE_S - $(date +%s)))
  [ $n -lt 1 ] && n=1
  echo $n
}
stamp() { echo "$(($(date +%s) - T0)) s: $*" | tee -a "$LOGS/timeline.txt"; }
declare -A SOURCE
for r in $REGIMES; do
  timeout "$(left)" $LI source --regime "$r" --preset "$PRESET" --out "$OUT_DIR" "$@" >"$LOGS/source-$r.log" 2>&1 &
  SOURCE[$r]=$!
done
stamp "sources started: $REGIMES"
CELLS=()
for r in $REGIMES; do  # each regime's cells start as soon as its source model is saved
  wait "${SOURCE[$r]}"
  stamp "source $r finished, rc=$?"
  for s in $SEEDS; do
    timeout "$(left)" $LI grid --preset "$PRESET" --out "$OUT_DIR" --regimes "[$r]" --seeds "[$s]" "${STRAT[@]}" "$@" \
      >"$LOGS/grid-$r-$s.log" 2>&1 &
    CELLS+=($!)
  done
done
[ ${#CELLS[@]} -gt 0 ] && wait "${CELLS[@]}"
stamp "cells finished or stopped at the deadline"
$LI grid --preset "$PRESET" --out "$OUT_DIR" --collect-only --regimes "[${REGIMES// /,}]" --seeds "[${SEEDS// /,}]" \
  "${STRAT[@]}" "$@"
