--[[
W10, lmp's side: mp.Pool{backend = "mpi"} under an MPI launcher (every rank
runs this script; ranks 1..n-1 serve the pool inside mp.Pool).

    mpirun -n 3 --oversubscribe lua5.4 bench/mpi_lmp.lua [map|apply|both]

(as root add OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 to the
environment).  Needs lmp.so and lmp/mpi.so at the repository root (make;
make mpi).  Rank 0 prints, like bench/py_mpi_futures.py:

    RESULT W10map_lmp <tasks/s>   pool:map(identity, 10^5 integers, 1)
    RESULT W10apply_lmp <us>      10^4 sequential pool:apply(inc, {x})
    RESULT W10cpu_lmp <us>        rank 0's CPU time per task in that map
                                  (os.clock; includes its spinning waits)
    RESULT W10map10_lmp, W10map100_lmp <tasks/s>   the same map, chunksize 10, 100

The pool is created and warmed (every worker has run tasks) before the
timed regions, and results are checked.  `identity` and `inc` are defined
once, as mpi4py.futures' side does (W2 writes its closure inside the loop;
that costs the same here: a stateless function is sent once per worker).
--]]
local BENCH = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.cpath = BENCH .. "/../?.so;" .. package.cpath
local mp = require "lmp"

local N_MAP, N_APPLY = 100000, 10000
local what = arg[1] or "both"

local function identity(x) return x end
local function inc(x) return x + 1 end

local function fail(msg)
  io.stderr:write("mpi_lmp: check failed: ", msg, "\n")
  os.exit(1)
end

local pool = mp.Pool{backend = "mpi"}
local workers = tonumber(tostring(pool):match("(%d+) workers"))
local warm = {}
for i = 1, 64 * workers do warm[i] = i end
if #pool:map(identity, warm, 1) ~= #warm then fail("warm-up") end
for i = 1, 200 do pool:apply(inc, {i}) end

if what == "map" or what == "both" then
  local items = {}
  for i = 1, N_MAP do items[i] = i end
  local t0, c0 = mp.time(), os.clock()
  local res = pool:map(identity, items, 1)
  local t, c = mp.time() - t0, os.clock() - c0
  for i = 1, N_MAP do if res[i] ~= i then fail("map results") end end
  print(string.format("RESULT W10map_lmp %.1f ranks=%d workers=%d", N_MAP / t, workers + 1, workers))
  print(string.format("RESULT W10cpu_lmp %.3f", c / N_MAP * 1e6))
  for _, cs in ipairs{10, 100} do
    t0 = mp.time()
    res = pool:map(identity, items, cs)
    t = mp.time() - t0
    for i = 1, N_MAP do if res[i] ~= i then fail("map results, chunksize " .. cs) end end
    print(string.format("RESULT W10map%d_lmp %.1f", cs, N_MAP / t))
  end
end
if what == "apply" or what == "both" then
  local t0 = mp.time()
  for i = 1, N_APPLY do
    if pool:apply(inc, {i}) ~= i + 1 then fail("apply result") end
  end
  local t = mp.time() - t0
  print(string.format("RESULT W10apply_lmp %.2f ranks=%d workers=%d", t / N_APPLY * 1e6, workers + 1,
    workers))
end
io.stdout:flush()
pool:close()
pool:join()
