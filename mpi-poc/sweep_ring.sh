#!/bin/sh
# sweep_ring.sh [ROUNDS] -- when to ring a sleeping peer (TPM_RING) and
# bell vs hybrid, on round trips of empty tasks (W10's apply, and the map),
# of 300 us tasks and of 1 ms tasks; interleaved, each run waits for a quiet
# machine (exp/quiet.sh).  Prints the medians.
cd "$(dirname "$0")"
ROUNDS=${1:-3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=${OUT:-/tmp/sweep_ring.$$}
: > "$OUT"
r=1
while [ $r -le "$ROUNDS" ]; do
  for cfg in "bellstale|TPM_POLICY=bell TPM_RING=stale" "bellsafe|TPM_POLICY=bell TPM_RING=safe" \
             "belltime|TPM_POLICY=bell TPM_RING=time" "hybrid250|TPM_POLICY=hybrid"; do
    name=${cfg%%|*}; envs=${cfg#*|}
    for wl in "fast|--what both" "t300|--what apply --n 20000 --work-us 300" \
              "t1000|--what apply --n 10000 --work-us 1000"; do
      wn=${wl%%|*}; args=${wl#*|}
      ./exp/quiet.sh 60 || echo "$name $wn NOISY" >> "$OUT"
      env $envs timeout 120 mpirun -n 3 --oversubscribe ./w10poc $args </dev/null 2>&1 |
        grep '^RESULT' | while read -r _ key val rest; do
          echo "$name $wn-${key%_poc} RESULT $key $val $rest"; done | tee -a "$OUT"
    done
  done
  r=$((r + 1))
done
echo "# medians ($ROUNDS rounds, $(date -Iseconds))"
lua5.4 exp/medians.lua "$OUT"
