-- Pool{backend = "mpi"}: small jobs under `mpirun -n 3 --oversubscribe` on
-- this machine (spec/fixtures/mpi/job.lua is the job; it prints key=value
-- lines).  Every mpirun runs under `timeout -s KILL`, and every rank writes
-- its pid to a file, so a spec checks that no rank process is left behind
-- and kills (by pid) any that is.  Pending, with the reason, when mpirun or
-- lmp/mpi.so (make mpi) is missing.
local lfs = require "lfs"
local support = require "spec.support"
local q, sh = support.q, support.sh

local ROOT = support.ROOT
local JOB = ROOT .. "/spec/fixtures/mpi/job.lua"
local LIMIT = 60
-- as root (CI), in containers (no CMA), with more ranks than cores
local ENV = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
  .. " OMPI_MCA_btl_vader_single_copy_mechanism=none"

local missing
if not sh("command -v mpirun >/dev/null 2>&1") then
  missing = "mpirun is not installed (sh scripts/deps.sh mpi)"
elseif not lfs.attributes(ROOT .. "/lmp/mpi.so") then
  missing = "lmp/mpi.so is not built (make mpi)"
end

-- `it` for a spec that needs MPI: pending with the reason when it is missing
local function mpi_it(name, f)
  it(name, function()
    if missing then
      pending(missing)
      return
    end
    f()
  end)
end

local function newdir()
  local d = support.tmpname()
  assert(lfs.mkdir(d))
  return d
end

local function rmdir(d)
  sh("rm -rf " .. q(d))
end

-- the pids the ranks of a job in `dir` wrote
local function rank_pids(dir)
  local pids = {}
  for r = 0, 2 do
    local p = tonumber(support.slurp(dir .. "/pid." .. r, ""):match("%d+"))
    if p then pids[#pids + 1] = p end
  end
  return pids
end

-- ranks still running a few seconds after their job ended (killed, by pid,
-- so that nothing outlives the spec)
local function leftovers(dir)
  local left = {}
  for _, p in ipairs(rank_pids(dir)) do
    if not support.wait_until(function() return support.dead(p) end, 5) then
      left[#left + 1] = p
      sh("kill -9 " .. p .. " 2>/dev/null")
    end
  end
  return left
end

-- `mpirun <args>` in `dir`; its output (stdout and stderr) and exit status
local function mpirun(dir, args)
  local out, status = support.run_sh(("cd %s && %s timeout -s KILL %d mpirun %s </dev/null"):format(
    q(dir), ENV, LIMIT, args), LIMIT + 10)
  return out, status
end

-- Open MPI's shared-memory segments (/dev/shm/vader_segment.*) of a job whose
-- ranks were killed stay behind: the names a killed job added are removed
local function shm_names()
  local set = {}
  for name in lfs.dir("/dev/shm") do set[name] = true end
  return set
end

local function shm_sweep(before)
  for name in lfs.dir("/dev/shm") do
    if not before[name] and name:match("^vader_segment%.") then os.remove("/dev/shm/" .. name) end
  end
end

-- runs job.lua MODE on 3 ranks; output, status, and the ranks left over
local function job(mode, opts)
  local dir = newdir()
  local out, status = mpirun(dir, ("-n 3 --oversubscribe %s lua5.4 %s %s %s"):format(
    opts or "", q(JOB), mode, q(dir)))
  local left = leftovers(dir)
  rmdir(dir)
  return out, status, left
end

local main
local function main_run()
  if not main then
    local out, status, left = job("main", "-x LMP_MPI_MAXMSG=100000")
    main = { out = out, status = status, left = left, f = support.fields(out) }
  end
  return main.f, main
end

describe("mp.Pool{backend = \"mpi\"}", function()
  mpi_it("gives rank 0 a pool over ranks 1..n-1; the other ranks serve it and exit 0 after close and join", function()
    local f, m = main_run()
    assert.are.equal("2", f.workers, m.out)
    assert.are.equal("true", f.joined, m.out)
    assert.are.equal(0, m.status, m.out)   -- mpirun: every rank exited 0
    assert.are.same({}, m.left)
  end)

  mpi_it("maps, imaps, starmaps and applies, in order, with chunksize", function()
    local f, m = main_run()
    assert.are.equal("10,20,30,40,50", f.map, m.out)
    assert.are.equal("1000", f.map_chunked, m.out)
    assert.are.equal("1:1,2:4,3:9", f.imap, m.out)
    assert.are.equal("10", f.imap_unordered, m.out)
    assert.are.equal("a1,b2", f.starmap, m.out)
    assert.are.equal("3,two", f.apply, m.out)
  end)

  mpi_it("sends upvalues by value, _ENV as the receiving rank's globals, libraries by name (required on demand)", function()
    local f, m = main_run()
    assert.are.equal("102", f.upvalue, m.out)
    assert.are.equal("1", f.upvalue_after, m.out)
    assert.truthy(f.env == "rank 1" or f.env == "rank 2", m.out)
    assert.are.equal("string", f.require, m.out)
  end)

  mpi_it("runs the initializer with its initargs on every worker rank", function()
    local f, m = main_run()
    assert.are.equal("init7", f.init, m.out)
  end)

  mpi_it("runs callbacks and error callbacks on rank 0; submit and as_completed work", function()
    local f, m = main_run()
    assert.are.equal("15,15", f.async, m.out)
    assert.are.equal("true", f.error_callback, m.out)
    assert.are.equal("10", f.as_completed, m.out)
    assert.are.equal("true", f.info_pid, m.out)
  end)

  mpi_it("re-raises a task's error with the remote traceback and the rank and host that ran it", function()
    local f, m = main_run()
    local e = f.error or ""
    assert.truthy(e:find("job.lua:%d+: boom|"), m.out)
    assert.truthy(e:find("|%(mpi rank [12] on host [^)]+%)|stack traceback:|"), m.out)
    assert.truthy(e:find("in function <[^>]*job.lua:%d+>"), m.out)
  end)

  mpi_it("fails a task past its timeout on its rank (even one that pcalls in a loop); the rank keeps serving", function()
    local f, m = main_run()
    assert.are.equal("lmp: task timed out after 0.3 s", f.timeout, m.out)
    assert.are.equal("lmp: task timed out after 0.3 s", f.timeout_pcall, m.out)
    assert.are.equal("ok", f.after_timeout, m.out)
  end)

  mpi_it("carries frames of every size, and splits those above LMP_MPI_MAXMSG", function()
    local f, m = main_run()
    assert.are.equal("20,10000,140000,600000", f.sizes, m.out)
  end)

  mpi_it("reports progress and writes a trace", function()
    local f, m = main_run()
    assert.are.equal("true", f.progress, m.out)
    assert.are.equal("true", f.trace, m.out)
  end)

  for _, c in ipairs {
    { "terminate", "terminates while a worker runs an endless Lua task", "terminated", "true" },
    { "noclose", "ends without closing the pool", "apply", "1" },
    { "exit", "leaves with os.exit and no close", "apply", "1" },
    { "collected", "drops the pool to the collector (it keeps no socket open)", "after", "0" },
  } do
    mpi_it("lets every rank exit 0 when rank 0 " .. c[2], function()
      local out, status, left = job(c[1])
      assert.are.equal(c[4], support.fields(out)[c[3]], out)
      assert.are.equal(0, status, out)
      assert.are.same({}, left)
    end)
  end
end)

describe("mp.Pool{backend = \"mpi\"} errors", function()
  it("without an MPI launcher: the 1-rank error at once, MPI never loaded", function()
    local out = support.run_lua([[
      local ok, err = pcall(mp.Pool, {backend = "mpi"})
      print(ok, err)
      for l in io.lines("/proc/self/maps") do
        if l:find("libmpi", 1, true) then print("MAPPED " .. l) end
      end
    ]])
    assert.truthy(out:find('false\tlmp: backend "mpi" needs mpirun -n 2 or more (this job has 1 rank)', 1, true), out)
    assert.is_nil(out:find("MAPPED", 1, true), out)
  end)

  mpi_it("with one rank: the same error", function()
    local dir = newdir()
    finally(function() rmdir(dir) end)
    local script = dir .. "/one.lua"
    local fh = assert(io.open(script, "w"))
    fh:write(("package.cpath = %q .. package.cpath\n"):format(ROOT .. "/?.so;"),
      'print(pcall(require("lmp").Pool, {backend = "mpi"}))\n')
    fh:close()
    local out, status = mpirun(dir, "-n 1 lua5.4 " .. q(script))
    assert.truthy(out:find('false\tlmp: backend "mpi" needs mpirun -n 2 or more (this job has 1 rank)', 1, true), out)
    assert.are.equal(0, status, out)
  end)

  it("without lmp.mpi: says how to get it", function()
    local dir = newdir()
    finally(function() rmdir(dir) end)
    assert.is_true(sh("ln -s " .. q(ROOT .. "/lmp.so") .. " " .. q(dir .. "/lmp.so")))
    local out = support.run_sh("OMPI_COMM_WORLD_SIZE=3 lua5.4 -e " .. q(([[
      package.cpath = %q
      print(pcall(require("lmp").Pool, {backend = "mpi"}))]]):format(dir .. "/?.so")))
    assert.truthy(out:find('lmp: backend "mpi" needs the lmp.mpi module (lmp/mpi.so), which is not installed', 1, true), out)
    assert.truthy(out:find("make mpi", 1, true), out)
    assert.truthy(out:find("openmpi-bin libopenmpi-dev", 1, true), out)
  end)

  it("refuses options a pool of MPI ranks cannot honour, and unknown backends", function()
    local out = support.run_lua([[
      for _, o in ipairs{ {backend = "mpi", processes = 2}, {backend = "mpi", maxtasksperchild = 5},
                          {backend = "threads"} } do
        print((select(2, pcall(mp.Pool, o))))
      end
    ]])
    assert.truthy(out:find('lmp: Pool processes cannot be set with backend "mpi"', 1, true), out)
    assert.truthy(out:find('lmp: Pool maxtasksperchild cannot be used with backend "mpi": a worker rank cannot be replaced', 1, true), out)
    assert.truthy(out:find('lmp: Pool backend must be "fork" (the default) or "mpi", got threads', 1, true), out)
  end)

  it("require \"lmp\" alone does not map libmpi, even with lmp.mpi built", function()
    local out = support.run_lua([[
      local n = 0
      for l in io.lines("/proc/self/maps") do if l:find("libmpi", 1, true) then n = n + 1 end end
      print("libmpi=" .. n)
    ]])
    assert.are.equal("0", support.fields(out).libmpi, out)
  end)

  mpi_it("refuses a rank whose Lua or lmp build differs (faked with LMP_MPI_FAKE_BUILD): rank 0 gets the error, the refused rank says why, every rank exits 0", function()
    local dir = newdir()
    finally(function() rmdir(dir) end)
    local out, status = mpirun(dir, ("-n 2 --oversubscribe lua5.4 %s mismatch %s : -n 1 -x LMP_MPI_FAKE_BUILD=1 lua5.4 %s mismatch %s")
      :format(q(JOB), q(dir), q(JOB), q(dir)))
    local f = support.fields(out)
    assert.are.equal("false", f.created, out)
    assert.truthy((f.err or ""):find("^lmp: mpi rank 2 %([^)]+%) runs another Lua or lmp build than rank 0"), out)
    assert.truthy(out:find("lmp: mpi rank 2 (", 1, true) and out:find("rank 0 refused this rank", 1, true), out)
    assert.are.equal(0, status, out)
    assert.are.same({}, leftovers(dir))
  end)
end)

-- `job.lua long` under mpirun in the background; once its map runs, `act`
-- (shell, with $d the job's dir and $m mpirun's pid) is done to it
local function while_running(act, opts)
  local dir = newdir()
  local shm = shm_names()
  local script = table.concat({
    "d=" .. q(dir),
    ("cd $d && %s timeout -s KILL %d sh -c 'echo $$ >%s/mpirun.pid; exec mpirun -n 3 --oversubscribe %s lua5.4 %s long %s' </dev/null >$d/out 2>&1 &")
      :format(ENV, LIMIT, dir, opts or "", JOB, dir),
    "w=$!",
    "i=0; while [ ! -f $d/started ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
    "sleep 0.5",
    "m=$(cat $d/mpirun.pid)",
    act,
    "wait $w; echo \"status=$?\" >>$d/out",
  }, "\n")
  support.run_sh(script, LIMIT + 10)
  local out = support.slurp(dir .. "/out", "")
  local left = leftovers(dir)
  rmdir(dir)
  shm_sweep(shm)
  return out, support.fields(out), left
end

describe("mp.Pool{backend = \"mpi\"} faults (Open MPI 4.1)", function()
  -- (how far rank 0 gets in the second before mpirun ends the job is not
  -- specified: its pool goes on meanwhile, as with --enable-recovery)
  mpi_it("kill -9 of a worker rank: rank 0 names it lost at once, and mpirun ends the job with status 137", function()
    local out, f, left = while_running("kill -9 $(cat $d/pid.2)")
    assert.truthy(out:find("lmp: mpi rank 2 %([^)]+%) lost\n"), out)
    assert.truthy(out:find("exited on signal 9", 1, true), out)   -- mpirun's own message
    assert.are.equal("137", f.status, out)                          -- 128 + SIGKILL, even if rank 0 finished
    assert.are.same({}, left)
  end)

  mpi_it("kill -9 of a worker rank under mpirun --enable-recovery: its task fails, the pool goes on without it", function()
    local out, f, left = while_running("kill -9 $(cat $d/pid.2)", "--enable-recovery")
    assert.truthy(out:find("lmp: mpi rank 2 %([^)]+%) lost\n"), out)
    assert.are.equal("false", f.long, out)
    assert.truthy((f.long_err or ""):find("^lmp: mpi rank 2 %([^)]+%) lost while running a task"), out)
    assert.are.equal("2,4,6", f.after, out)
    assert.are.equal("true", f.joined, out)
    assert.are.equal("0", f.status, out)
    assert.are.same({}, left)
  end)

  mpi_it("kill -9 of rank 0: the workers see their lifelines close and leave; the job ends non-zero", function()
    local out, f, left = while_running("kill -9 $(cat $d/pid.0)")
    assert.truthy(out:find("rank 0 went away; leaving", 1, true), out)
    assert.is_nil(f.joined, out)
    assert.are_not.equal("0", f.status, out)
    assert.are.same({}, left)
  end)

  mpi_it("Ctrl-C (SIGINT to mpirun) stops every rank", function()
    local out, f, left = while_running("kill -INT $m")
    assert.is_nil(f.joined, out)
    assert.are_not.equal("0", f.status, out)
    assert.are.same({}, left)
  end)
end)
