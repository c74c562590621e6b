#!/bin/sh
# sigint.sh [pid|group] [extra mpirun args...]
# Starts `mpirun -n 3 kill iprobe` in its own session (setsid) and, 0.5 s
# after rank 2 started, sends SIGINT either to mpirun alone (`pid`, like
# `kill -INT <mpirun>`) or to mpirun's whole process group (`group`, what a
# terminal's Ctrl-C does); reports the ranks' process groups, the signals
# they saw (each rank logs to a file: mpirun's I/O forwarding dies with it),
# when and how mpirun exited, and any process left over.
cd "$(dirname "$0")"
HOW=${1:-pid}; shift
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T=/tmp/sigint.$$
export KILL_PIDFILE=$T.pid KILL_LOG=$T.log
rm -f "$KILL_PIDFILE"
ms() { date +%s%3N; }
# no `timeout` in front of mpirun: it would share the group and get the SIGINT too
setsid sh -c 'echo $$ > '$T'.mp; exec mpirun -n 3 --oversubscribe "$@" ./kill iprobe return 4' sh "$@" &
TO=$!
i=0
while [ ! -s "$KILL_PIDFILE" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
sleep 0.5
MP=$(cat $T.mp)
ps -o pid,pgid,sid,comm -p "$MP" $(pgrep -P "$MP" | tr '\n' ' ') >&2
PG=$(ps -o pgid= -p "$MP" | tr -d ' ')
K=$(ms)
if [ "$HOW" = group ]; then
  echo "[$K.0] shell: kill -INT -$PG (mpirun's process group)" >&2
  kill -INT -"$PG"
else
  echo "[$K.0] shell: kill -INT $MP (mpirun)" >&2
  kill -INT "$MP"
fi
( sleep 15; kill -9 $TO 2>/dev/null ) >/dev/null 2>&1 &
WD=$!
wait $TO
RC=$?
kill $WD 2>/dev/null
E=$(ms)
echo "[$E.0] shell: mpirun exited with status $RC, $((E - K)) ms after SIGINT" >&2
sleep 2.5
cat "$KILL_LOG".* | sort >&2
echo "left over:" >&2
ps -eo pid,stat,comm | awk '$3=="kill" || $3=="mpirun" || $3=="orted"' >&2
rm -f "$KILL_PIDFILE" "$KILL_LOG".* $T.mp
