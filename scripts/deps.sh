#!/bin/sh
# Check for the Debian packages a task needs and install the missing ones.
#
#   sh scripts/deps.sh demo          build lmp.so and run the examples
#   sh scripts/deps.sh test          ... plus the busted suite (and luarocks,
#                                    tmux for the pty specs, Open MPI for the
#                                    backend "mpi" specs)
#   sh scripts/deps.sh test asan     ... plus clang for the sanitizer and fuzz builds
#   sh scripts/deps.sh bench         ... plus Python for the peer figures
#   sh scripts/deps.sh valgrind      ... plus valgrind
#   sh scripts/deps.sh mpi           ... plus Open MPI (make mpi) and mpi4py (bench W10)
#
# Profiles add up; any other word is taken as a package name.  Installs
# with apt-get as root, or through sudo when that is available; otherwise
# names the missing packages and fails.  LMP_SKIP_DEPS=1 skips the check
# (e.g. on a machine where the tools come from elsewhere).

PACKAGES="lua5.4 liblua5.4-dev gcc libc6-dev make"
for profile in "$@"; do
    case $profile in
    demo) ;;
    test) PACKAGES="$PACKAGES lua-busted lua-cjson lua-filesystem luarocks tmux openmpi-bin libopenmpi-dev" ;;
    asan|fuzz) PACKAGES="$PACKAGES clang libclang-rt-14-dev" ;;
    bench) PACKAGES="$PACKAGES lua-cjson python3" ;;
    valgrind) PACKAGES="$PACKAGES valgrind" ;;
    mpi) PACKAGES="$PACKAGES openmpi-bin libopenmpi-dev python3-mpi4py" ;;
    *) PACKAGES="$PACKAGES $profile" ;;
    esac
done

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
