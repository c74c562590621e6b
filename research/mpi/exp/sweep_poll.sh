#!/bin/sh
# sweep_poll.sh [ROUNDS] [WORKLOADS] -- runs poll.c's policies interleaved
# (order reversed on even rounds; each run waits for a quiet machine, see
# quiet.sh) and prints every RESULT line with its
# config name, then the medians (needs lua5.4).
#   WORKLOADS: default "rt map"; add "serial" for the busy-root test.
cd "$(dirname "$0")"
ROUNDS=${1:-3}
WORK=${2:-rt map}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# name | env | args after the workload (N INFLIGHT SPIN_US)
CONFIGS='block||block
block-y0|OMPI_MCA_mpi_yield_when_idle=0|block
spin-y0|OMPI_MCA_mpi_yield_when_idle=0|spin
yield||yield
backoff||backoff
hybrid50||hybrid %N% 64 50
hybrid200||hybrid %N% 64 200
hybrid1000||hybrid %N% 64 1000
hybrid1000-y0|OMPI_MCA_mpi_yield_when_idle=0|hybrid %N% 64 1000
bell50||bell %N% 64 50
bell200||bell %N% 64 200'
OUT=${OUT:-/tmp/sweep_poll.$$}
: > "$OUT"
r=1
while [ $r -le "$ROUNDS" ]; do
  if [ $((r % 2)) -eq 1 ]; then LIST=$(echo "$CONFIGS"); else LIST=$(echo "$CONFIGS" | tac); fi
  for w in $WORK; do
    case $w in rt) N=10000;; map) N=200000;; serial) N=1;; esac
    echo "$LIST" | while IFS='|' read -r name envs args; do
      [ "$w" = serial ] && case $name in block|block-y0|hybrid1000|bell200|backoff) ;; *) continue;; esac
      pol=${args%% *}; rest=${args#"$pol"}
      rest=$(echo "$rest" | sed "s/%N%/$N/")
      [ -z "$rest" ] && rest=" $N"
      ./quiet.sh 60 || echo "$name $w NOISY" >> "$OUT"
      line=$(env $envs timeout 120 mpirun -n 3 --oversubscribe ./poll $pol $w $rest </dev/null 2>&1 | grep '^RESULT')
      echo "$name $w $line" | tee -a "$OUT"
    done
  done
  r=$((r + 1))
done
echo "# medians ($ROUNDS rounds, $(date -Iseconds))"
lua5.4 medians.lua "$OUT"
