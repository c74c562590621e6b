#!/usr/bin/env python3
"""Python reference for the Pool workloads (W1-W4) of bench/pool.lua.

Runs ONE workload per process, named by argv[1], with multiprocessing's
"fork" start method, and prints one machine-readable line:

    RESULT <key> <value> [name=value ...]

    W1default  RESULT w1_default <tasks/s>        map(identity, 100,000 ints)
    W1chunk1   RESULT w1_chunk1 <tasks/s>         same with chunksize=1
    W2         RESULT w2_us <us per round trip>   10,000 sequential apply(x + 1)
    W3         RESULT w3_speedup <serial/pool>    40 calls over Pool(2) vs serial
                                                  (serial = mean of a run before and after)
    W4str      RESULT w4_str_mbps <MB/s>          one task returning 64 MiB bytes
    W4floats   RESULT w4_floats_ms <ms>           one task returning 10^6 floats

The pool is created and warmed before the timed region; data that a task
returns is built before the pool is created (module globals inherited by the
fork), so only the transfer is timed. Results are checked for correctness.
"""
import multiprocessing
import sys
import time

N_W1 = 100_000
N_W2 = 10_000
N_W3 = 200_000       # ~20 ms per call in CPython 3.11 on the reference VM
W3_CALLS = 40
STR_BYTES = 64 << 20
N_FLOATS = 10 ** 6

BIG = None
FLOATS = None


def identity(x):
    return x


def inc(x):
    return x + 1


def burn(seed):
    acc = seed
    for i in range(1, N_W3 + 1):
        acc = (acc * 31 + i) % 1000000007
    return acc


def get_big():
    return BIG


def get_floats():
    return FLOATS


def fail(msg):
    sys.stderr.write("py_pool: check failed: %s\n" % msg)
    sys.exit(1)


def make_pool(ctx):
    pool = ctx.Pool(2)
    # warm up: both workers alive and have run a task
    if pool.map(identity, range(8), chunksize=1) != list(range(8)):
        fail("warm-up")
    return pool


def w1(ctx, chunksize):
    items = list(range(N_W1))
    pool = make_pool(ctx)
    t0 = time.perf_counter()
    if chunksize is None:
        res = pool.map(identity, items)
    else:
        res = pool.map(identity, items, chunksize)
    t = time.perf_counter() - t0
    pool.terminate()
    pool.join()
    if len(res) != N_W1 or res[0] != 0 or res[12345] != 12345 or res[-1] != N_W1 - 1:
        fail("W1 map result")
    return N_W1 / t, "seconds=%.6f" % t


def w2(ctx):
    pool = make_pool(ctx)
    t0 = time.perf_counter()
    for i in range(N_W2):
        if pool.apply(inc, (i,)) != i + 1:
            fail("W2 apply result")
    t = time.perf_counter() - t0
    pool.terminate()
    pool.join()
    return t / N_W2 * 1e6, "seconds=%.6f" % t


def w3(ctx):
    seeds = list(range(W3_CALLS))
    pool = make_pool(ctx)

    # serial before and after the pool run; their mean damps CPU-speed drift
    def serialrun():
        t0 = time.perf_counter()
        out = [burn(s) for s in seeds]
        return out, time.perf_counter() - t0

    serial, ts1 = serialrun()
    t0 = time.perf_counter()
    par = pool.map(burn, seeds)
    tp = time.perf_counter() - t0
    _, ts2 = serialrun()
    ts = (ts1 + ts2) / 2
    pool.terminate()
    pool.join()
    if serial != par:
        fail("W3 serial and pool results differ")
    return ts / tp, "serial_ms=%.3f,%.3f pool_ms=%.3f" % (ts1 * 1e3, ts2 * 1e3, tp * 1e3)


def w4str(ctx):
    global BIG
    BIG = bytes(range(256)) * (STR_BYTES // 256)
    pool = make_pool(ctx)
    t0 = time.perf_counter()
    res = pool.apply(get_big)
    t = time.perf_counter() - t0
    pool.terminate()
    pool.join()
    if len(res) != STR_BYTES or res != BIG:
        fail("W4 string result")
    return STR_BYTES / t / 1e6, "seconds=%.6f" % t


def w4floats(ctx):
    global FLOATS
    FLOATS = [(i - 1) * 0.5 + 0.25 for i in range(1, N_FLOATS + 1)]
    pool = make_pool(ctx)
    t0 = time.perf_counter()
    res = pool.apply(get_floats)
    t = time.perf_counter() - t0
    pool.terminate()
    pool.join()
    if len(res) != N_FLOATS or res[0] != 0.25 or res[-1] != (N_FLOATS - 1) * 0.5 + 0.25 \
            or res[4242] != 4242 * 0.5 + 0.25:
        fail("W4 floats result")
    return t * 1e3, "seconds=%.6f" % t


WORKLOADS = {
    "W1default": ("w1_default", lambda ctx: w1(ctx, None)),
    "W1chunk1": ("w1_chunk1", lambda ctx: w1(ctx, 1)),
    "W2": ("w2_us", w2),
    "W3": ("w3_speedup", w3),
    "W4str": ("w4_str_mbps", w4str),
    "W4floats": ("w4_floats_ms", w4floats),
}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in WORKLOADS:
        sys.stderr.write("usage: py_pool.py {%s}\n" % "|".join(WORKLOADS))
        sys.exit(2)
    key, fn = WORKLOADS[sys.argv[1]]
    ctx = multiprocessing.get_context("fork")
    value, extra = fn(ctx)
    print("RESULT %s %.6g %s" % (key, value, extra), flush=True)


if __name__ == "__main__":
    main()
