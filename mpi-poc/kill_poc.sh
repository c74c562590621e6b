#!/bin/sh
# kill_poc.sh [continue|exit] [extra mpirun args...]
# A 10-second map (1 ms tasks) over 2 workers; rank 2 is SIGKILLed 1 s in.
# Shows when rank 0 notices (its "lmp: mpi rank 2 (host) lost" line, from
# the side-socket lifeline), what happens to the lost tasks, whether the
# job goes on, and mpirun's exit status and timing.
cd "$(dirname "$0")"
ONLOSS=${1:-continue}; shift
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ms() { date +%s%3N; }
timeout -k 2 40 mpirun -n 3 --oversubscribe "$@" ./w10poc --what map --n 10000 --work-us 1000 \
  --on-loss "$ONLOSS" &
MP=$!
sleep 1
PID=""
for p in $(pgrep -x w10poc); do
  if tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=2'; then PID=$p; fi
done
K=$(ms)
echo "[$K.0] shell: kill -9 $PID (rank 2)" >&2
kill -9 "$PID"
wait $MP
RC=$?
E=$(ms)
echo "[$E.0] shell: mpirun exited with status $RC, $((E - K)) ms after the kill" >&2
sleep 0.5
ps -eo pid,stat,comm | awk '$3=="w10poc" || $3=="mpirun" || $3=="orted"' >&2
