#!/usr/bin/env python3
"""Python reference for W5 (bench/process.lua).

Starts and joins a do-nothing multiprocessing.Process (fork start method)
ITERS times (argv[2], default 1,000) and prints one line:

    RESULT w5_us <us per process> seconds=<total>

usage: py_process.py W5 [iters]
"""
import multiprocessing
import sys
import time


def noop():
    pass


def main():
    if len(sys.argv) < 2 or sys.argv[1] != "W5":
        sys.stderr.write("usage: py_process.py W5 [iters]\n")
        sys.exit(2)
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    ctx = multiprocessing.get_context("fork")
    # warm up (imports, first fork) outside the timed region
    p = ctx.Process(target=noop)
    p.start()
    p.join()
    t0 = time.perf_counter()
    for _ in range(iters):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        if p.exitcode != 0:
            sys.stderr.write("py_process: child exit code %r\n" % p.exitcode)
            sys.exit(1)
    t = time.perf_counter() - t0
    print("RESULT w5_us %.6g seconds=%.6f" % (t / iters * 1e6, t), flush=True)


if __name__ == "__main__":
    main()
