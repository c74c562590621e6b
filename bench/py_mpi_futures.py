#!/usr/bin/env python3
"""Python reference for W10 (Pool across MPI ranks): mpi4py.futures.

Run under an MPI launcher with mpi4py.futures' pre-started-ranks model
(rank 0 runs this script, every other rank serves tasks):

    mpiexec -n 3 --oversubscribe /usr/bin/python3 -m mpi4py.futures \\
        bench/py_mpi_futures.py [map|apply|both]

(Debian's mpi4py is installed for /usr/bin/python3 only; as root add
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 to the environment.)

Workloads, one RESULT line each (default: both, map first):

    map    RESULT W10map_py <tasks/s>    executor.map(identity, 10^5 ints, chunksize=1)
    apply  RESULT W10apply_py <us>       10^4 sequential submit(inc, x).result()

The executor is created and warmed (every worker has run a task) before the
timed regions; results are checked.  mpi4py.futures' own polling back-off
(MPI4PY_FUTURES_BACKOFF, default 1 ms) is left at its default.
"""
import sys
import time

N_MAP = 100_000
N_APPLY = 10_000


def identity(x):
    return x


def inc(x):
    return x + 1


def fail(msg):
    sys.stderr.write("py_mpi_futures: check failed: %s\n" % msg)
    sys.exit(1)


def main():
    from mpi4py import MPI
    from mpi4py.futures import MPIPoolExecutor

    what = sys.argv[1] if len(sys.argv) > 1 else "both"
    if what not in ("map", "apply", "both"):
        fail("usage: py_mpi_futures.py [map|apply|both]")
    size = MPI.COMM_WORLD.Get_size()
    workers = size - 1              # -m mpi4py.futures: every other rank serves
    with MPIPoolExecutor() as ex:
        # warm up: every worker has run a task
        if list(ex.map(identity, range(8 * workers), chunksize=1)) != list(range(8 * workers)):
            fail("warm-up")
        if what in ("map", "both"):
            items = list(range(N_MAP))
            t0 = time.perf_counter()
            res = list(ex.map(identity, items, chunksize=1))
            t = time.perf_counter() - t0
            if res != items:
                fail("map results")
            print("RESULT W10map_py %.1f ranks=%d workers=%d" % (N_MAP / t, size, workers),
                  flush=True)
        if what in ("apply", "both"):
            t0 = time.perf_counter()
            for i in range(N_APPLY):
                if ex.submit(inc, i).result() != i + 1:
                    fail("apply result")
            t = time.perf_counter() - t0
            print("RESULT W10apply_py %.2f ranks=%d workers=%d" % (t / N_APPLY * 1e6, size, workers),
                  flush=True)


if __name__ == "__main__":
    main()
