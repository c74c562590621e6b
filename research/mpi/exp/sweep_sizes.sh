#!/bin/sh
# sweep_sizes.sh [ROUNDS] -- sizes.c (8 B .. 64 MiB round trips, ranks 0-1)
# with vader's single-copy mechanism cma (the default) and none, on 2 ranks
# and on 3 (oversubscribed: Open MPI yields when idle), interleaved; each
# run waits for a quiet machine (quiet.sh).  Prints the medians per size.
cd "$(dirname "$0")"
ROUNDS=${1:-3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
CONFIGS='cma-n2|-n 2 --mca btl_vader_single_copy_mechanism cma
none-n2|-n 2 --mca btl_vader_single_copy_mechanism none
cma-n3|-n 3 --oversubscribe --mca btl_vader_single_copy_mechanism cma
none-n3|-n 3 --oversubscribe --mca btl_vader_single_copy_mechanism none'
OUT=${OUT:-/tmp/sweep_sizes.$$}
: > "$OUT"
r=1
while [ $r -le "$ROUNDS" ]; do
  if [ $((r % 2)) -eq 1 ]; then LIST=$(echo "$CONFIGS"); else LIST=$(echo "$CONFIGS" | tac); fi
  echo "$LIST" | while IFS='|' read -r name args; do
    ./quiet.sh 60 || echo "$name all NOISY" >> "$OUT"
    timeout 300 mpirun $args ./sizes </dev/null 2>&1 | grep '^RESULT' |
      while read -r _ key val rest; do echo "$name ${key#size_} RESULT $key $val $rest"; done |
      tee -a "$OUT"
  done
  r=$((r + 1))
done
echo "# medians ($ROUNDS rounds, $(date -Iseconds)); value = us per round trip"
lua5.4 medians.lua "$OUT" | sort -k1,1 -k2,2n
