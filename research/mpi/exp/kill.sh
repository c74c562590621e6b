#!/bin/sh
# kill.sh MODE [fatal|return] [extra mpirun args...]
# Starts `mpirun -n 3 kill MODE ...`, SIGKILLs rank 2 KILL_AFTER (default 0.3)
# seconds after it started, and
# reports how long mpirun took to exit after the kill and its status.
cd "$(dirname "$0")"
MODE=$1; EH=${2:-fatal}; shift 2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export KILL_PIDFILE=/tmp/kill.$$.pid
rm -f "$KILL_PIDFILE"
ms() { date +%s%3N; }
timeout -k 2 20 mpirun -n 3 --oversubscribe "$@" ./kill "$MODE" "$EH" 4 &
MP=$!
i=0
while [ ! -s "$KILL_PIDFILE" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
sleep ${KILL_AFTER:-0.3}
PID=$(cat "$KILL_PIDFILE")
K=$(ms)
echo "[$K.0] shell: kill -9 $PID (rank 2)" >&2
kill -9 "$PID"
wait $MP
RC=$?
E=$(ms)
echo "[$E.0] shell: mpirun exited with status $RC, $((E - K)) ms after the kill" >&2
rm -f "$KILL_PIDFILE"
