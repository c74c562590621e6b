--[[
W10 (Pool across MPI ranks): the reference sides, interleaved.

    lua5.4 bench/mpi_w10.lua [--runs N] [--poc]     (default 5 runs)

Round r runs, in order (reversed on even rounds), each in a fresh mpirun:
  raw3    mpirun -n 3 --oversubscribe bench/mpi_pingpong     W10pingpong (3 ranks, as W10)
  raw2    mpirun -n 2 bench/mpi_pingpong                     W10pingpong (2 ranks, one per core)
  python  mpirun -n 3 --oversubscribe /usr/bin/python3 -m mpi4py.futures bench/py_mpi_futures.py
                                                             W10map_py, W10apply_py
and, with --poc, the transport prototype of mpi-poc/ (C echo tasks: the
ceiling a Pool over MPI can reach on this machine; built by `make -C mpi-poc`):
  poc     mpirun -n 3 --oversubscribe mpi-poc/w10poc         W10map_poc, W10apply_poc
          (TPM_POLICY=bell, its default: spin 250 us, then sleep on a side socket)
  pochyb  the same with TPM_POLICY=hybrid (spin 250 us, then nanosleep back-off)
and prints `STAT <row> <side> <median> <best> <n>` lines.  The lmp side
joins when `backend = "mpi"` exists.  Each run first waits (up to 60 s) for
the machine to be quiet (mpi-poc/exp/quiet.sh), as the 2 vCPUs are shared.

Why two ping-pongs: mpirun marks a job whose ranks outnumber the cores as
oversubscribed, and Open MPI then sets mpi_yield_when_idle, so every poll
of a blocked MPI_Recv calls sched_yield(): 3 ranks on this 2-core machine
measure ~2.4 µs per round trip instead of ~0.9 µs (mpi-poc/NOTES.md).

Environment: MPIRUN (default mpirun), PYTHON_MPI (default /usr/bin/python3,
Debian's python with python3-mpi4py), CC_MPI (default mpicc),
LMP_BENCH_TIMEOUT.  As root the script sets OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM).
--]]
local BENCH = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = BENCH .. "/?.lua;" .. package.path
local B = require "benchlib"

local poc = false
do
  local rest = {}
  for _, a in ipairs(arg) do
    if a == "--poc" then poc = true else rest[#rest + 1] = a end
  end
  arg = rest
end
local opts = B.parse_args(arg)
local mpirun = os.getenv("MPIRUN") or "mpirun"
local py = os.getenv("PYTHON_MPI") or "/usr/bin/python3"
local env = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "

local exe, src = B.dir .. "/mpi_pingpong", B.dir .. "/mpi_pingpong.c"
if not os.execute("test " .. B.quote(exe) .. " -nt " .. B.quote(src)) then
  local cmd = string.format("%s -O2 -o %s %s", os.getenv("CC_MPI") or "mpicc", B.quote(exe),
    B.quote(src))
  assert(os.execute(cmd), "bench: cannot build " .. src)
end

local sides = {
  { name = "raw3", cmd = env .. mpirun .. " -n 3 --oversubscribe " .. B.quote(exe) },
  { name = "raw2", cmd = env .. mpirun .. " -n 2 " .. B.quote(exe) },
  { name = "python", cmd = env .. mpirun .. " -n 3 --oversubscribe " .. B.quote(py)
      .. " -m mpi4py.futures " .. B.quote(B.dir .. "/py_mpi_futures.py") },
}
local quiet = B.dir .. "/../mpi-poc/exp/quiet.sh"
if poc then
  local w = B.dir .. "/../mpi-poc/w10poc"
  assert(os.execute("make -s -C " .. B.quote(B.dir .. "/../mpi-poc") .. " w10poc"),
    "bench: cannot build mpi-poc/w10poc")
  table.insert(sides, { name = "poc", cmd = env .. "TPM_POLICY=bell " .. mpirun
    .. " -n 3 --oversubscribe " .. B.quote(w) })
  table.insert(sides, { name = "pochyb", cmd = env .. "TPM_POLICY=hybrid " .. mpirun
    .. " -n 3 --oversubscribe " .. B.quote(w) })
end
local rows = {
  { row = "W10map", side = "python", key = "W10map_py", higher = true, unit = "tasks/s" },
  { row = "W10apply", side = "python", key = "W10apply_py", higher = false, unit = "µs" },
  { row = "W10map", side = "poc", key = "W10map_poc", higher = true, unit = "tasks/s" },
  { row = "W10map", side = "pochyb", key = "W10map_poc", higher = true, unit = "tasks/s" },
  { row = "W10apply", side = "poc", key = "W10apply_poc", higher = false, unit = "µs" },
  { row = "W10apply", side = "pochyb", key = "W10apply_poc", higher = false, unit = "µs" },
  { row = "W10pingpong", side = "raw3", key = "W10pingpong", higher = false, unit = "µs" },
  { row = "W10pingpong", side = "raw2", key = "W10pingpong", higher = false, unit = "µs" },
}

local vals = {}
for r = 1, opts.runs do
  for k = 1, #sides do
    local s = sides[r % 2 == 1 and k or #sides + 1 - k]
    if not os.execute(B.quote(quiet) .. " 60") then
      io.stderr:write("  W10 (machine busy: measuring anyway)\n")
      print(string.format("INFO W10 %s noisy run %d", s.name, r))
    end
    local res, err = B.run(s.cmd)
    if not res then
      print(string.format("ERROR W10 %s %s", s.name, err))
    else
      for key, v in pairs(res) do
        local id = s.name .. " " .. key
        vals[id] = vals[id] or {}
        table.insert(vals[id], v.value)
        io.stderr:write(string.format("  W10 run %d/%d %-6s %-12s %s\n", r, opts.runs, s.name, key,
          B.fmt(v.value)))
      end
    end
  end
end
print(os.date("INFO W10 date %Y-%m-%dT%H:%M:%S"))
for _, row in ipairs(rows) do
  local t = vals[row.side .. " " .. row.key]
  local st = t and B.stats(t, row.higher)
  if st then
    print(string.format("STAT %s %s %.6g %.6g %d", row.row, row.side, st.median, st.best, st.n))
    io.stderr:write(string.format("# %-12s %-6s %s %s (best %s, n=%d)\n", row.row, row.side,
      B.fmt(st.median), row.unit, B.fmt(st.best), st.n))
  end
end
