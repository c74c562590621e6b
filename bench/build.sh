#!/bin/sh
# Build the raw-C reference programs next to their sources (bench/rawpipe, ...).
# The Lua drivers do the same on demand; CC and CFLAGS are honoured.
set -e
cd "$(dirname "$0")"
CC=${CC:-cc}
CFLAGS=${CFLAGS:--O2 -Wall -Wextra}
for p in rawpipe rawfork pingpong; do
  $CC $CFLAGS -o "$p" "$p.c"
done
