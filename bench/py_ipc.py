#!/usr/bin/env python3
"""Python reference for W7-W9 (bench/ipc.lua), multiprocessing with the fork
start method.  Prints one line:

    RESULT <row> <value> seconds=<total>

usage: py_ipc.py ROW [simple|locked]
  W7int W7str W7mpmc   multiprocessing.Queue ("simple": SimpleQueue)
  W8                   Pipe() round trips of [i, "x"], us per round trip
  W9lock               Lock acquire+release, ns per pair
  W9locked             2 processes x 10^6 increments under Value's lock
"""
import multiprocessing
import sys
import time

N_INT, N_STR, STR_LEN, N_RT, N_LOCK, N_INC = 1000000, 10000, 10000, 100000, 1000000, 1000000
ctx = multiprocessing.get_context("fork")


def newq(kind):
    return ctx.SimpleQueue() if kind == "simple" else ctx.Queue()


def producer(q, items):
    for i in items:
        q.put(i)


def w7int(kind):
    q = newq(kind)
    t0 = time.perf_counter()
    p = ctx.Process(target=producer, args=(q, range(1, N_INT + 1)))
    p.start()
    s = 0
    for _ in range(N_INT):
        s += q.get()
    t = time.perf_counter() - t0
    p.join()
    assert s == N_INT * (N_INT + 1) // 2
    return N_INT / t, t


def w7str(kind):
    q = newq(kind)
    s = "x" * STR_LEN
    t0 = time.perf_counter()
    p = ctx.Process(target=producer, args=(q, (s for _ in range(N_STR))))
    p.start()
    n = 0
    for _ in range(N_STR):
        n += len(q.get())
    t = time.perf_counter() - t0
    p.join()
    assert n == N_STR * STR_LEN
    return n / t / 1e6, t


def consumer(q, out):
    n = 0
    while q.get() is not None:
        n += 1
    out.put(n)


def w7mpmc(kind):
    q, out = newq(kind), ctx.Queue()
    t0 = time.perf_counter()
    cs = [ctx.Process(target=consumer, args=(q, out)) for _ in range(2)]
    ps = [ctx.Process(target=producer, args=(q, range(k * N_INT, k * N_INT + N_INT // 2)))
          for k in (1, 2)]
    for p in cs + ps:
        p.start()
    for p in ps:
        p.join()
    q.put(None)
    q.put(None)
    n = out.get() + out.get()
    t = time.perf_counter() - t0
    for p in cs:
        p.join()
    assert n == N_INT
    return N_INT / t, t


def echo(c):
    while True:
        v = c.recv()
        if v is None:
            break
        c.send(v)


def w8(_):
    a, b = ctx.Pipe()
    p = ctx.Process(target=echo, args=(b,))
    p.start()
    a.send([0, "x"])
    a.recv()
    t0 = time.perf_counter()
    for i in range(1, N_RT + 1):
        a.send([i, "x"])
        r = a.recv()
        assert r[0] == i
    t = time.perf_counter() - t0
    a.send(None)
    p.join()
    return t / N_RT * 1e6, t


def w9lock(_):
    lock = ctx.Lock()
    for _ in range(1000):
        lock.acquire()
        lock.release()
    t0 = time.perf_counter()
    for _ in range(N_LOCK):
        lock.acquire()
        lock.release()
    t = time.perf_counter() - t0
    return t / N_LOCK * 1e9, t


def incr(v, go):
    go.wait()
    lock = v.get_lock()
    for _ in range(N_INC):
        with lock:
            v.value += 1


def w9locked(_):
    v = ctx.Value("i", 0)
    go = ctx.Event()
    ps = [ctx.Process(target=incr, args=(v, go)) for _ in range(2)]
    for p in ps:
        p.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    go.set()
    for p in ps:
        p.join()
    t = time.perf_counter() - t0
    assert v.value == 2 * N_INC, v.value
    return 2 * N_INC / t, t


ROWS = {"W7int": w7int, "W7str": w7str, "W7mpmc": w7mpmc, "W8": w8, "W9lock": w9lock,
        "W9locked": w9locked, "W9atomic": w9locked}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ROWS:
        sys.stderr.write("usage: py_ipc.py ROW [simple|locked]\n")
        sys.exit(2)
    row = sys.argv[1]
    value, t = ROWS[row](sys.argv[2] if len(sys.argv) > 2 else "")
    print("RESULT %s %.6g seconds=%.6f" % (row, value, t), flush=True)


if __name__ == "__main__":
    main()
