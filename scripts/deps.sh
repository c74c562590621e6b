#!/bin/sh
# Check for the Debian packages lmp needs and install the missing ones.
#
#   sh scripts/deps.sh             packages for build, test, asan and fuzz
#   sh scripts/deps.sh valgrind    ... plus extra packages named on the line
#
# Installs with apt-get as root, or through sudo when that is available;
# otherwise names the missing packages and fails.  LMP_SKIP_DEPS=1 skips
# the check (e.g. on a machine where the tools come from elsewhere).

PACKAGES="lua5.4 liblua5.4-dev lua-busted luarocks lua-cjson gcc make clang libclang-rt-14-dev python3 $*"

if [ -n "${LMP_SKIP_DEPS:-}" ]; then
    exit 0
fi
if ! command -v dpkg >/dev/null 2>&1; then
    echo "deps: no dpkg here, cannot check packages; make sure these are installed:" >&2
    echo "deps:   $PACKAGES" >&2
    exit 0
fi

missing=
for p in $PACKAGES; do
    if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=
elif command -v sudo >/dev/null 2>&1; then
    as_root=sudo
else
    echo "deps: missing Debian packages:$missing" >&2
    echo "deps: install them as root:  apt-get install$missing" >&2
    exit 1
fi

echo "deps: installing$missing" >&2
if ! $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
   ! $as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends $missing; then
    echo "deps: could not install:$missing" >&2
    echo "deps: install them as root:  apt-get install$missing" >&2
    exit 1
fi
