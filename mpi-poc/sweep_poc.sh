#!/bin/sh
# sweep_poc.sh [ROUNDS] -- the prototype's waiting policies on W10's shapes
# (map 10^5 tasks at depth 64, 10^4 sequential applies) and on a busy rank 0
# (serial: ~3 s of computing while the workers wait), interleaved; every run
# waits for a quiet machine (exp/quiet.sh).  Prints the medians.
cd "$(dirname "$0")"
ROUNDS=${1:-3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# name | environment
CONFIGS='bell250|TPM_POLICY=bell TPM_SPIN_US=250
bell50|TPM_POLICY=bell TPM_SPIN_US=50
bell0|TPM_POLICY=bell TPM_SPIN_US=0
hybrid250|TPM_POLICY=hybrid TPM_SPIN_US=250
hybrid0|TPM_POLICY=hybrid TPM_SPIN_US=0
spin|TPM_POLICY=spin'
OUT=${OUT:-/tmp/sweep_poc.$$}
: > "$OUT"
r=1
while [ $r -le "$ROUNDS" ]; do
  if [ $((r % 2)) -eq 1 ]; then LIST=$(echo "$CONFIGS"); else LIST=$(echo "$CONFIGS" | tac); fi
  for w in both serial; do
    echo "$LIST" | while IFS='|' read -r name envs; do
      ./exp/quiet.sh 60 || echo "$name $w NOISY" >> "$OUT"
      env $envs timeout 120 mpirun -n 3 --oversubscribe ./w10poc --what $w </dev/null 2>&1 |
        grep '^RESULT' | while read -r _ key val rest; do
          echo "$name ${key%_poc} RESULT $key $val $rest"; done | tee -a "$OUT"
    done
  done
  r=$((r + 1))
done
echo "# medians ($ROUNDS rounds, $(date -Iseconds))"
lua5.4 exp/medians.lua "$OUT"
