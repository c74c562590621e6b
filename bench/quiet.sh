#!/bin/sh
# quiet.sh [MAX_SECONDS] -- waits (default up to 120 s) until the machine
# is at least 85 % idle over half a second: the 2 vCPUs are shared with
# other work, and a spinning MPI rank measures mostly its neighbours.
# Prints "quiet after N s" or "NOT quiet after N s" on stderr.
MAX=${1:-120}
t=0
idle() {
  a=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8, $5}' /proc/stat)
  sleep 0.5
  b=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8, $5}' /proc/stat)
  echo "$a $b" | awk '{d=$3-$1; if (d <= 0) d = 1; printf "%d", 100 * ($4-$2) / d}'
}
while [ "$(idle)" -lt 85 ]; do
  if [ $t -ge "$MAX" ]; then echo "NOT quiet after $t s" >&2; exit 1; fi
  sleep 2; t=$((t + 2))
done
[ $t -gt 0 ] && echo "quiet after $t s" >&2
exit 0
