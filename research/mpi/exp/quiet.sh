#!/bin/sh
# quiet.sh [MAX_SECONDS] -- the experiments' wait for a quiet machine is the
# benchmarks' own (bench/quiet.sh, which this was copied into).
exec "$(dirname "$0")/../../../bench/quiet.sh" "$@"
