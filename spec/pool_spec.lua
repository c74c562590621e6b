-- mp.Pool and AsyncResult (API.md "Pool"; issue 4). Every pool a test
-- creates is terminated when the test ends (`<close>`), pass or fail.
-- Scenarios that need lua.c's SIGINT handler or a raw mp.fork run in a
-- fresh lua5.4 interpreter, so a stray child can never keep running busted.
package.cpath = "./?.so;" .. package.cpath

local mp = require "lmp"
local lfs = require "lfs"
local support = require "spec.support"

---------------------------------------------------------------------------
-- helpers (the shared ones are in spec/support.lua)
---------------------------------------------------------------------------
local slurp, run_lua, fields = support.slurp, support.run_lua, support.fields
local dead, gone, wait_until, open_fds = support.dead, support.gone, support.wait_until, support.open_fds
local assert_error_with = support.assert_error_with

local children, count = support.children, support.count

local range, worker_pids = support.range, support.worker_pids

local function counter(n)
  local i = 0
  return function()
    i = i + 1
    if i <= n then return i end
  end
end

local double = function(x) return 2 * x end

-- the ways a worker can die mid-task, and the message each must give
local deaths = {
  { "os.exit(3)", function() os.exit(3) end, "exited with code 3 while running a task" },
  { "kill -9", function() mp.kill(mp.getpid(), "KILL") mp.sleep(5) end,
    "killed by signal 9 (SIGKILL) while running a task" },
  { "SIGSEGV", function() mp.kill(mp.getpid(), "SEGV") mp.sleep(5) end,
    "killed by signal 11 (SIGSEGV) while running a task" },
}

---------------------------------------------------------------------------
describe("mp.Pool", function()
  describe("raises at once on bad arguments:", function()
    local cases = {
      { "Pool(0)", 0, "lmp: Pool needs at least 1 process" },
      { "Pool(-3)", -3, "lmp: Pool needs at least 1 process" },
      { "Pool(1.5)", 1.5, "lmp:" },
      { "Pool('two')", "two", "lmp:" },
      { "Pool(true)", true, "lmp:" },
      { "processes=0", { processes = 0 }, "lmp: Pool needs at least 1 process" },
      { "processes=2.5", { processes = 2.5 }, "lmp: Pool processes must be an integer" },
      { "processes='2'", { processes = "2" }, "lmp: Pool processes must be an integer" },
      { "initializer=5", { processes = 1, initializer = 5 }, "lmp: Pool initializer must be a function" },
      { "initializer='f'", { processes = 1, initializer = "f" }, "lmp: Pool initializer must be a function" },
      { "initargs=5", { processes = 1, initargs = 5 }, "lmp: Pool initargs must be a table" },
      { "maxtasksperchild=0", { processes = 1, maxtasksperchild = 0 }, "lmp: Pool maxtasksperchild must be a positive integer" },
      { "maxtasksperchild=1.5", { processes = 1, maxtasksperchild = 1.5 }, "lmp: Pool maxtasksperchild must be a positive integer" },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        local before = count(children())
        assert_error_with(c[3], mp.Pool, c[2])
        assert.are.equal(before, count(children()))
      end)
    end
  end)

  it("defaults to cpu_count() workers", function()
    local pool <close> = mp.Pool()
    assert.are.equal(mp.cpu_count(), tonumber(tostring(pool):match("(%d+) workers")))
    local pool2 <close> = mp.Pool({})
    assert.are.equal(mp.cpu_count(), tonumber(tostring(pool2):match("(%d+) workers")))
  end)

  it("runs the initializer with initargs in every worker before any task", function()
    local pool <close> = mp.Pool{ processes = 2,
      initializer = function(a, b, c) WORKER_TAG = a .. ":" .. tostring(b) .. ":" .. c end,
      initargs = table.pack("x", nil, "z") }
    local tags = pool:map(function() mp.sleep(0.02); return WORKER_TAG end, range(8), 1)
    for i = 1, 8 do assert.are.equal("x:nil:z", tags[i]) end
    assert.is_nil(WORKER_TAG)                   -- never in the parent
  end)

  it("fails creation with the initializer's error, leaving no worker", function()
    local before = count(children())
    local err = assert_error_with("lmp: pool initializer failed: ", mp.Pool,
      { processes = 2, initializer = function() error("no database") end })
    assert.truthy(err:find("no database", 1, true))
    assert.truthy(err:find("stack traceback", 1, true))
    assert.are.equal(before, count(children()))
  end)

  it("fails creation when a worker dies in the initializer", function()
    local before = count(children())
    local err = assert_error_with("lmp: pool initializer failed: ", mp.Pool,
      { processes = 2, initializer = function() os.exit(4) end })
    assert.truthy(err:find("exited with code 4", 1, true), err)
    err = assert_error_with("lmp: pool initializer failed: ", mp.Pool,
      { processes = 1, initializer = function() mp.kill(mp.getpid(), "KILL") mp.sleep(5) end })
    assert.truthy(err:find("SIGKILL", 1, true), err)
    assert.are.equal(before, count(children()))
  end)

  it("replaces a worker after maxtasksperchild tasks", function()
    local pool <close> = mp.Pool{ processes = 1, maxtasksperchild = 2 }
    local pids = {}
    for i = 1, 6 do pids[i] = pool:apply(mp.getpid) end
    assert.are.equal(pids[1], pids[2])
    assert.are.equal(pids[3], pids[4])
    assert.are.equal(pids[5], pids[6])
    assert.are_not.equal(pids[1], pids[3])
    assert.are_not.equal(pids[3], pids[5])
    -- a map through recycled workers still gets every item right
    local r = pool:map(double, range(50), 3)
    for i = 1, 50 do assert.are.equal(2 * i, r[i]) end
    local uses = {}
    for _, pid in ipairs(pool:map(function() return mp.getpid() end, range(10), 1)) do
      uses[pid] = (uses[pid] or 0) + 1
    end
    assert.is_true(count(uses) >= 5)
    for pid, n in pairs(uses) do assert.is_true(n <= 2, pid .. " ran " .. n .. " tasks") end
  end)

  it("runs tasks defined after the pool was created, with their upvalues", function()
    local pool <close> = mp.Pool(2)
    local base, tbl = 100, { k = "v" }
    local function later(x) return base + x, tbl.k end
    assert.are.same({ 101, "v" }, { pool:apply(later, { 1 }) })
    base = 200                                   -- upvalues travel by value, per call
    assert.are.same({ 202, "v" }, { pool:apply(later, { 2 }) })
    local r = pool:map(function(x) return base * x end, range(5))
    assert.are.same({ 200, 400, 600, 800, 1000 }, r)
  end)

  it("creates and closes 30 pools without leaking an fd or a process", function()
    collectgarbage()
    local fds, kids = open_fds(), count(children())
    for i = 1, 30 do
      local pool = mp.Pool(2)
      assert.are.same({ 2, 4, 6 }, pool:map(double, { 1, 2, 3 }))
      pool:close()
      pool:join()
    end
    collectgarbage()
    assert.are.equal(fds, open_fds())
    assert.are.equal(kids, count(children()))
  end)

  it("leaves no worker behind after join (reaped, not zombies)", function()
    local pool <close> = mp.Pool(3)
    local pids = worker_pids(pool, 3)
    assert.is_true(#pids >= 2)
    pool:close()
    pool:join()
    for _, pid in ipairs(pids) do assert.is_true(gone(pid), "worker " .. pid .. " survived join") end
  end)

  it("carries a 64 MiB result through apply", function()
    local pool <close> = mp.Pool(1)
    local s = pool:apply(function(n) return string.rep("ab", n) end, { 32 * 1024 * 1024 })
    assert.are.equal(64 * 1024 * 1024, #s)
    assert.are.equal("abab", s:sub(1, 4))
    assert.are.equal("abab", s:sub(-4))
  end)

  it("runs a nested pool inside a task", function()
    local pool <close> = mp.Pool(2)
    local r = pool:apply(function()
      local inner = mp.Pool(1)
      local out = inner:map(function(x) return x * x end, { 1, 2, 3 })
      inner:close()
      inner:join()
      return out
    end)
    assert.are.same({ 1, 4, 9 }, r)
    assert.are.same({ 2, 4 }, pool:map(double, { 1, 2 }))
  end)

  it("is not torn down by a forked child that touches it", function()
    local pool <close> = mp.Pool(2)
    local pids = worker_pids(pool, 2)
    local p = mp.Process(function()
      local ok, err = pcall(pool.map, pool, double, { 1 })
      local ok2, err2 = pcall(pool.terminate, pool)
      return ok, err, ok2, err2
    end):start()
    local ok, err, ok2, err2 = p:get(30)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("belongs to process " .. mp.getpid(), 1, true), err)
    assert.is_false(ok2)
    assert.truthy(tostring(err2):find("belongs to process", 1, true), err2)
    for _, pid in ipairs(pids) do assert.is_false(dead(pid)) end
    assert.are.same({ 2, 4, 6 }, pool:map(double, { 1, 2, 3 }))
  end)

  it("is not torn down by a forked child whose Lua state is closed (__gc runs)", function()
    local out = run_lua([[
      local pool = mp.Pool(2)
      local pids = pool:map(function() mp.sleep(0.05) return mp.getpid() end, {1,2,3,4,5,6,7,8}, 1)
      local pid = assert(mp.fork())
      if pid == 0 then
        pool = nil
        collectgarbage(); collectgarbage()
        os.exit(0, true)                 -- closes the state: every __gc runs
      end
      mp.wait(pid)
      local alive = 0
      local seen = {}
      for _, w in ipairs(pids) do
        if not seen[w] then
          seen[w] = true
          local f = io.open("/proc/" .. w .. "/stat")
          if f then
            if not f:read("a"):match("^%d+ %b() Z") then alive = alive + 1 end
            f:close()
          end
        end
      end
      print("alive=" .. alive)
      local r = pool:map(function(x) return x + 1 end, {1, 2, 3})
      print("map=" .. table.concat(r, ","))
      pool:close(); pool:join()
      print("done=yes")
    ]], 30)
    local f = fields(out)
    assert.are.equal("2", f.alive, out)
    assert.are.equal("2,3,4", f.map, out)
    assert.are.equal("yes", f.done, out)
  end)

  it("stops its workers and raises 'lmp: interrupted' on SIGINT while waiting", function()
    local out = run_lua([[
      local pool = mp.Pool(2)
      local pids = pool:map(function() mp.sleep(0.05) return mp.getpid() end, {1,2,3,4,5,6,7,8}, 1)
      local parent = mp.getpid()
      local helper = assert(mp.fork())
      if helper == 0 then
        mp.sleep(0.3)
        mp.kill(parent, "INT")
        os.exit(0)
      end
      local t0 = mp.time()
      local ok, err = pcall(pool.map, pool, function() mp.sleep(20) end, {1, 2, 3, 4}, 1)
      print("ok=" .. tostring(ok))
      print("err=" .. tostring(err):gsub("\n", " "))
      print("elapsed=" .. (mp.time() - t0))
      mp.wait(helper)
      local alive = 0
      for _, w in ipairs(pids) do
        local f = io.open("/proc/" .. w .. "/stat")
        if f then
          if not f:read("a"):match("^%d+ %b() Z") then alive = alive + 1 end
          f:close()
        end
      end
      print("alive=" .. alive)
      print("pids=" .. table.concat(pids, ","))
    ]], 30)
    local f = fields(out)
    assert.are.equal("false", f.ok, out)
    assert.truthy((f.err or ""):find("lmp: interrupted", 1, true), out)
    assert.is_true(tonumber(f.elapsed) < 5, out)
    assert.are.equal("0", f.alive, out)
    for pid in (f.pids or ""):gmatch("%d+") do
      assert.is_true(wait_until(function() return dead(tonumber(pid)) end, 5), "worker " .. pid .. " survived")
    end
  end)

  it("terminates at the end of a <close> scope", function()
    local pids
    do
      local pool <close> = mp.Pool(2)
      pids = worker_pids(pool, 2)
    end
    for _, pid in ipairs(pids) do assert.is_true(gone(pid), "worker " .. pid .. " survived <close>") end
  end)

  it("leaves no worker when the main script ends without close", function()
    local out = run_lua([[
      local pool = mp.Pool(2)
      local pids = pool:map(function() mp.sleep(0.05) return mp.getpid() end, {1,2,3,4,5,6}, 1)
      print("pids=" .. table.concat(pids, ","))
    ]], 30)
    local f = fields(out)
    assert.truthy(f.pids, out)
    for pid in f.pids:gmatch("%d+") do
      assert.is_true(wait_until(function() return dead(tonumber(pid)) end, 5), "worker " .. pid .. " survived")
    end
  end)
end)

---------------------------------------------------------------------------
describe("Pool:apply", function()
  local pool
  setup(function() pool = mp.Pool(2) end)
  teardown(function() pool:terminate() end)

  it("returns every value of the task, nils included", function()
    assert.are.same({ 1, "two", { 3 } }, { pool:apply(function() return 1, "two", { 3 } end) })
    local r = table.pack(pool:apply(function(...) return select("#", ...), ... end, table.pack(nil, 2, nil)))
    assert.are.equal(4, r.n)
    assert.are.equal(3, r[1])
    assert.is_nil(r[2])
    assert.are.equal(2, r[3])
    assert.are.equal(0, select("#", pool:apply(function() end)))
    assert.are.equal(3, select("#", pool:apply(function() return 1, nil, nil end)))
  end)

  it("passes no arguments for nil args", function()
    assert.are.equal(0, pool:apply(function(...) return select("#", ...) end))
    assert.are.equal(0, pool:apply(function(...) return select("#", ...) end, {}))
  end)

  it("runs the task in a worker", function()
    local pid = pool:apply(mp.getpid)
    assert.are_not.equal(mp.getpid(), pid)
    assert.are.equal(mp.getpid(), pool:apply(mp.getppid))
  end)

  it("re-raises the task's error with the worker's traceback", function()
    local err = assert_error_with("no such key", pool.apply, pool, function() error("no such key") end)
    assert.truthy(err:find("stack traceback", 1, true), err)
    assert.truthy(err:find("pool_spec.lua", 1, true), err)
  end)

  it("re-raises a non-string error value as the same value", function()
    local ok, err = pcall(pool.apply, pool, function() error({ code = 42 }) end)
    assert.is_false(ok)
    assert.are.same({ code = 42 }, err)
  end)

  it("raises at once on a non-function task or non-table args", function()
    for _, bad in ipairs({ 1, "f", {}, true }) do
      assert_error_with("lmp: task must be a function", pool.apply, pool, bad)
    end
    assert_error_with("lmp: args must be a table", pool.apply, pool, print, 5)
  end)

  it("fails only that task on an unserializable argument, naming where it sits", function()
    local fh <close> = io.tmpfile()
    assert_error_with("lmp: cannot serialize userdata at args[2].conn", pool.apply, pool,
      function() end, { 1, { conn = fh } })
    assert_error_with("lmp: cannot serialize thread at args[1]", pool.apply, pool,
      function() end, { coroutine.create(print) })
    assert.are.equal(3, pool:apply(function(a, b) return a + b end, { 1, 2 }))
  end)

  it("fails only that task on an unserializable result, naming where it sits", function()
    assert_error_with("lmp: cannot serialize userdata at result[1]", pool.apply, pool,
      function() return io.tmpfile() end)
    assert_error_with("lmp: cannot serialize thread at result[2].co", pool.apply, pool,
      function() return 1, { co = coroutine.create(print) } end)
    assert.are.equal(3, pool:apply(function(a, b) return a + b end, { 1, 2 }))
  end)

  for _, d in ipairs(deaths) do
    it("fails the task when the worker dies mid-task (" .. d[1] .. "), then keeps going", function()
      local err = assert_error_with(d[3], pool.apply, pool, d[2])
      assert.truthy(err:find("lmp: pool worker %d+ "), err)
      assert.are.same({ 2, 4, 6, 8 }, pool:map(double, { 1, 2, 3, 4 }))
    end)
  end

  it("raises 'lmp: pool is closed' after close", function()
    local p <close> = mp.Pool(1)
    p:close()
    assert_error_with("lmp: pool is closed", p.apply, p, print)
  end)
end)

---------------------------------------------------------------------------
describe("Pool:apply_async", function()
  local pool
  setup(function() pool = mp.Pool(2) end)
  teardown(function() pool:terminate() end)

  it("returns an AsyncResult whose get gives every value", function()
    local r = pool:apply_async(function(a, b) return a + b, a * b end, { 3, 4 })
    assert.truthy(tostring(r):find("lmp.AsyncResult", 1, true))
    assert.are.same({ 7, 12 }, { r:get() })
    assert.are.same({ 7, 12 }, { r:get() })         -- again: same values
    assert.is_true(r:ready())
    assert.is_true(r:successful())
  end)

  it("runs tasks concurrently", function()
    local t0 = mp.time()
    local a = pool:apply_async(function() mp.sleep(0.3) return 1 end)
    local b = pool:apply_async(function() mp.sleep(0.3) return 2 end)
    assert.are.equal(1, a:get())
    assert.are.equal(2, b:get())
    assert.is_true(mp.time() - t0 < 0.55)
  end)

  it("calls the callback in the parent with every value", function()
    local got, where
    local r = pool:apply_async(function() return 1, nil, 3 end, nil,
      function(...) got = table.pack(...); where = mp.getpid() end)
    r:wait()
    assert.are.equal(mp.getpid(), where)
    assert.are.equal(3, got.n)
    assert.are.equal(1, got[1])
    assert.are.equal(3, got[3])
  end)

  it("calls the error_callback with the error, and get re-raises it", function()
    local got, cbcalled
    local r = pool:apply_async(function() error("bad thing") end, nil,
      function() cbcalled = true end, function(e) got = e end)
    assert.is_true(r:wait(10))
    assert.is_nil(cbcalled)
    assert.truthy(tostring(got):find("bad thing", 1, true))
    assert.is_false(r:successful())
    local err = assert_error_with("bad thing", r.get, r)
    assert.truthy(err:find("stack traceback", 1, true))
  end)

  it("raises at once on a non-callable callback", function()
    assert_error_with("lmp: callback must be a function", pool.apply_async, pool, print, {}, 5)
    assert_error_with("lmp: error_callback must be a function", pool.apply_async, pool, print, {}, nil, 5)
  end)

  it("raises a callback's error from the pool call that ran it; the pool keeps working", function()
    local r = pool:apply_async(function() return 1 end, nil, function() error("callback broke") end)
    assert_error_with("callback broke", function() r:wait(10) end)
    assert.are.same({ 2, 4 }, pool:map(double, { 1, 2 }))
  end)

  it("fails an unserializable argument on get, not at submission", function()
    local fh <close> = io.tmpfile()
    local r = pool:apply_async(function() end, { fh })
    assert_error_with("lmp: cannot serialize userdata at args[1]", r.get, r)
  end)
end)

---------------------------------------------------------------------------
describe("AsyncResult:get", function()
  it("raises 'lmp: timeout' when the result is late, and works later", function()
    local pool <close> = mp.Pool(1)
    local r = pool:apply_async(function() mp.sleep(0.4) return "late" end)
    local t0 = mp.time()
    assert_error_with("lmp: timeout", r.get, r, 0.05)
    assert.is_true(mp.time() - t0 < 0.3)
    assert.are.equal("late", r:get(10))
  end)

  it("rejects a negative timeout", function()
    local pool <close> = mp.Pool(1)
    local r = pool:apply_async(function() return 1 end)
    assert.has_error(function() r:get(-1) end)
    assert.are.equal(1, r:get())
  end)
end)

describe("AsyncResult:wait", function()
  it("returns false on timeout and true once ready", function()
    local pool <close> = mp.Pool(1)
    local r = pool:apply_async(function() mp.sleep(0.3) end)
    assert.is_false(r:wait(0.02))
    assert.is_true(r:wait(10))
    assert.is_true(r:wait(0))
  end)
end)

describe("AsyncResult:ready", function()
  it("is false while running, true when done (success or failure)", function()
    local pool <close> = mp.Pool(1)
    local r = pool:apply_async(function() mp.sleep(0.2) end)
    assert.is_false(r:ready())
    r:wait()
    assert.is_true(r:ready())
    local e = pool:apply_async(function() error("x") end)
    e:wait()
    assert.is_true(e:ready())
  end)
end)

describe("AsyncResult:successful", function()
  it("raises while not ready, then tells success from failure", function()
    local pool <close> = mp.Pool(1)
    local r = pool:apply_async(function() mp.sleep(0.2) end)
    assert_error_with("lmp: result is not ready", r.successful, r)
    r:wait()
    assert.is_true(r:successful())
    local e = pool:apply_async(function() error("x") end)
    e:wait()
    assert.is_false(e:successful())
  end)
end)

---------------------------------------------------------------------------
describe("Pool:map", function()
  local pool
  setup(function() pool = mp.Pool(2) end)
  teardown(function() pool:terminate() end)

  it("returns the first results in input order, for every chunksize", function()
    local input = range(103)
    for _, cs in ipairs({ false, 1, 2, 7, 50, 103, 1000 }) do
      local r = pool:map(function(x) return x * x, "ignored" end, input, cs or nil)
      assert.are.equal(103, #r)
      for i = 1, 103 do assert.are.equal(i * i, r[i]) end
    end
  end)

  it("returns an empty table for an empty input", function()
    assert.are.same({}, pool:map(double, {}))
    assert.are.same({}, pool:map(double, counter(0)))
  end)

  it("leaves holes for nil results", function()
    local r = pool:map(function(x) if x % 2 == 0 then return x end end, range(6), 1)
    assert.are.same({ [2] = 2, [4] = 4, [6] = 6 }, r)
  end)

  it("accepts an iterator function as input", function()
    local r = pool:map(double, counter(500))
    assert.are.equal(500, #r)
    for i = 1, 500 do assert.are.equal(2 * i, r[i]) end
  end)

  it("raises at once on bad arguments", function()
    assert_error_with("lmp: task must be a function", pool.map, pool, 5, { 1 })
    assert_error_with("lmp: iterable must be an array or an iterator function", pool.map, pool, double, 5)
    assert_error_with("lmp: iterable must be an array or an iterator function", pool.map, pool, double, nil)
    for _, cs in ipairs({ 0, -1 }) do
      assert_error_with("lmp: chunksize must be a positive integer", pool.map, pool, double, { 1 }, cs)
    end
    assert.has_error(function() pool:map(double, { 1 }, 1.5) end)
  end)

  it("re-raises the lowest failing item's error", function()
    for _, cs in ipairs({ 1, 3, 100 }) do
      local err = assert_error_with("item 4 failed", pool.map, pool, function(x)
        if x >= 4 and x % 2 == 0 then error("item " .. x .. " failed") end
        return x
      end, range(40), cs)
      assert.truthy(err:find("stack traceback", 1, true))
    end
  end)

  it("raises an input iterator's error after the items before it", function()
    local calls = 0
    local function it()
      calls = calls + 1
      if calls == 6 then error("input broke") end
      return calls
    end
    assert_error_with("input broke", pool.map, pool, double, it)
    -- a task error before the iterator error wins
    calls = 0
    assert_error_with("item 2", pool.map, pool, function(x)
      if x == 2 then error("item 2") end return x end, it, 1)
  end)

  it("fails on an unserializable item, naming its index", function()
    local fh <close> = io.tmpfile()
    assert_error_with("lmp: cannot serialize userdata at args[3]", pool.map, pool, double, { 1, 2, fh, 4 })
    assert_error_with("lmp: cannot serialize thread at result[2]", pool.map, pool, function(x)
      if x == 2 then return coroutine.create(print) end return x end, { 1, 2, 3 }, 1)
    assert.are.same({ 2, 4 }, pool:map(double, { 1, 2 }))
  end)

  for _, d in ipairs(deaths) do
    it("fails when a worker dies mid-task (" .. d[1] .. "), then keeps going", function()
      local f = d[2]
      assert_error_with(d[3], pool.map, pool, function(x) if x == 5 then f() end return x end, range(10), 1)
      local r = pool:map(double, range(20))
      for i = 1, 20 do assert.are.equal(2 * i, r[i]) end
    end)
  end
end)

describe("Pool:map_async", function()
  it("returns an AsyncResult and calls the callback with the result array", function()
    local pool <close> = mp.Pool(2)
    local got
    local r = pool:map_async(double, range(10), 2, function(t) got = t end)
    assert.are.same({ 2, 4, 6, 8, 10, 12, 14, 16, 18, 20 }, r:get())
    assert.are.same(r:get(), got)
    local err
    local e = pool:map_async(function(x) if x == 3 then error("three") end end, range(5), 1, nil,
      function(x) err = x end)
    assert.is_false(e:wait(10) and e:successful())
    assert.truthy(tostring(err):find("three", 1, true))
    assert_error_with("three", e.get, e)
  end)

  it("raises at once on a non-callable callback", function()
    local pool <close> = mp.Pool(1)
    assert_error_with("lmp: callback must be a function", pool.map_async, pool, double, { 1 }, nil, 5)
    assert_error_with("lmp: error_callback must be a function", pool.map_async, pool, double, { 1 }, nil, nil, 5)
  end)
end)

describe("Pool:starmap", function()
  it("unpacks each item as the arguments, honouring n", function()
    local pool <close> = mp.Pool(2)
    assert.are.same({ 3, 7, 11 }, pool:starmap(function(a, b) return a + b end, { { 1, 2 }, { 3, 4 }, { 5, 6 } }))
    local r = pool:starmap(function(...) return select("#", ...) end,
      { table.pack(nil, nil), table.pack(1), {}, table.pack(nil, 1, nil) })
    assert.are.same({ 2, 1, 0, 3 }, r)
    local it = counter(4)
    assert.are.same({ 1, 4, 9, 16 }, pool:starmap(function(a) return a * a end,
      function() local v = it() if v then return { v } end end))
  end)
end)

describe("Pool:starmap_async", function()
  it("returns an AsyncResult and calls the callback", function()
    local pool <close> = mp.Pool(2)
    local got
    local r = pool:starmap_async(function(a, b) return a .. b end, { { "a", "b" }, { "c", "d" } }, 1,
      function(t) got = t end)
    assert.are.same({ "ab", "cd" }, r:get(10))
    assert.are.same({ "ab", "cd" }, got)
  end)
end)

---------------------------------------------------------------------------
describe("Pool:imap", function()
  local pool
  setup(function() pool = mp.Pool(2) end)
  teardown(function() pool:terminate() end)

  it("yields index, value in input order", function()
    local n = 0
    for i, v in pool:imap(function(x) mp.sleep((x % 3) * 0.01) return x * 10 end, range(30), 2) do
      n = n + 1
      assert.are.equal(n, i)
      assert.are.equal(10 * i, v)
    end
    assert.are.equal(30, n)
  end)

  it("yields results before the input is exhausted, consuming an iterator lazily", function()
    local pulled = 0
    local it = pool:imap(double, function()
      pulled = pulled + 1
      if pulled <= 1000000 then return pulled end
    end)
    local i, v = it()
    assert.are.equal(2, v)
    assert.are.equal(1, i)
    assert.is_true(pulled < 10000, "pulled " .. pulled .. " items before yielding the first result")
    pool:terminate()
    pool = mp.Pool(2)
  end)

  it("streams 10^5 items from an iterator", function()
    local sum, n = 0, 0
    for _, v in pool:imap(double, counter(100000), 100) do sum = sum + v; n = n + 1 end
    assert.are.equal(100000, n)
    assert.are.equal(100000 * 100001, sum)
  end)

  it("yields the results before a failing item, then raises its error", function()
    local got = {}
    local ok, err = pcall(function()
      for _, v in pool:imap(function(x) if x == 4 then error("four") end return x end, range(10), 1) do
        got[#got + 1] = v
      end
    end)
    assert.is_false(ok)
    assert.truthy(err:find("four", 1, true))
    assert.truthy(err:find("stack traceback", 1, true))
    assert.are.same({ 1, 2, 3 }, got)
  end)

  -- the failing item is not the first of its chunk (chunksize 4)
  local function imap_until_error(f, input)
    local got = {}
    local ok, err = pcall(function()
      for i, v in pool:imap(f, input, 4) do got[i] = v end
    end)
    assert.is_false(ok)
    return got, tostring(err)
  end

  it("yields the results before an item whose result cannot be encoded, in its chunk", function()
    local got, err = imap_until_error(function(x)
      if x == 3 then return coroutine.create(print) end
      return x * 10
    end, range(8))
    assert.truthy(err:find("lmp: cannot serialize thread at result[3]", 1, true), err)
    assert.are.same({ 10, 20 }, got)
    assert.are.same({ 2, 4 }, pool:map(double, { 1, 2 }))
  end)

  it("reports the first failure when a result that won't encode comes before an error", function()
    local got, err = imap_until_error(function(x)
      if x == 3 then return coroutine.create(print) end
      if x == 4 then error("boom at 4") end
      return x * 10
    end, range(8))
    assert.truthy(err:find("lmp: cannot serialize thread at result[3]", 1, true), err)
    assert.are.same({ 10, 20 }, got)
  end)

  it("yields the results before an argument the worker cannot decode, in its chunk", function()
    -- registered after the workers forked: they do not know the name
    local mt = mp.register("lmp.spec.late", {})
    local got, err = imap_until_error(function(x) return x * 10 end,
      { 1, 2, setmetatable({}, mt), 4, 5 })
    assert.truthy(err:find("lmp: decode: metatable 'lmp.spec.late' is not registered", 1, true), err)
    assert.are.same({ 10, 20 }, got)
    assert.are.same({ 2, 4 }, pool:map(double, { 1, 2 }))
  end)

  it("yields the results before an input iterator's error, then raises it", function()
    local got, calls = {}, 0
    local ok, err = pcall(function()
      for _, v in pool:imap(double, function()
        calls = calls + 1
        if calls == 5 then error("source dried up") end
        return calls
      end) do got[#got + 1] = v end
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("source dried up", 1, true))
    assert.are.same({ 2, 4, 6, 8 }, got)
  end)

  it("returns nil, without waiting, when called again after a break closed it", function()
    -- in a fresh interpreter with a time limit: the failure is a wait forever
    local out, status = support.run_lua([[
      local pool <close> = mp.Pool(1)
      local it, s, c, closer = pool:imap(function(x) mp.sleep(0.05) return x end, { 1, 2, 3, 4 })
      for _, v in it, s, c, closer do assert(v == 1) break end
      print("again=" .. tostring(it()) .. "," .. tostring(it()))
      print("after=" .. table.concat(pool:map(function(x) return x + 1 end, { 1, 2 }), ","))
    ]], 20)
    assert.are.equal(0, status, out)
    assert.are.equal("nil,nil", support.fields(out).again, out)
    assert.are.equal("2,3", support.fields(out).after, out)
  end)

  it("sends each item an input iterator makes, even when the collector runs between them", function()
    -- items only the chunk being built held were freed, and a later item
    -- given the same address went out as a reference to the earlier one
    local i, n = 0, 2000
    local it = pool:imap(function(t) return t[1] end, function()
      i = i + 1
      if i > n then return nil end
      if i % 5 == 0 then collectgarbage() end   -- frees the items before
      return { i }
    end, 50)
    local wrong, count = 0, 0
    for idx, v in it do
      count = count + 1
      if v ~= idx then wrong = wrong + 1 end
    end
    assert.are.equal(n, count)
    assert.are.equal(0, wrong)
  end)

  it("yields a nil result as index, nil: a generic for goes on past it", function()
    local it = pool:imap(function(x) if x ~= 2 then return x end end, { 1, 2, 3 }, 1)
    assert.are.same({ 1, 1 }, { it() })
    local r = table.pack(it())
    assert.are.same({ n = 2, 2 }, r)     -- index 2, value nil: two values
    assert.are.same({ 3, 3 }, { it() })
    assert.is_nil(it())
    local seen = {}
    for i, v in pool:imap(function(x) if x ~= 2 then return x end end, { 1, 2, 3 }, 1) do
      seen[#seen + 1] = tostring(i) .. "=" .. tostring(v)
    end
    assert.are.same({ "1=1", "2=nil", "3=3" }, seen)
  end)

  it("raises at once on bad arguments", function()
    assert_error_with("lmp: task must be a function", pool.imap, pool, 5, { 1 })
    assert_error_with("lmp: chunksize must be a positive integer", pool.imap, pool, double, { 1 }, 0)
    assert_error_with("lmp: iterable must be", pool.imap, pool, double, "abc")
  end)

  for _, d in ipairs(deaths) do
    it("raises when a worker dies mid-task (" .. d[1] .. "), then the pool keeps going", function()
      local f, got = d[2], {}
      local ok, err = pcall(function()
        for _, v in pool:imap(function(x) if x == 3 then f() end return x end, range(6), 1) do got[#got + 1] = v end
      end)
      assert.is_false(ok)
      assert.truthy(tostring(err):find(d[3], 1, true), err)
      assert.are.same({ 1, 2 }, got)
      assert.are.same({ 2, 4, 6 }, pool:map(double, { 1, 2, 3 }))
    end)
  end
end)

describe("Pool:imap_unordered", function()
  it("yields every value once with its index", function()
    local pool <close> = mp.Pool(2)
    local seen, n = {}, 0
    for i, v in pool:imap_unordered(function(x) mp.sleep(((7 * x) % 5) * 0.005) return -x end, range(50)) do
      assert.are.equal(-i, v)
      assert.is_nil(seen[i])
      seen[i] = true
      n = n + 1
    end
    assert.are.equal(50, n)
  end)

  it("gives the items after a long one to the free worker, as Python does", function()
    -- a task handed to a worker stays there: queueing round-robin at the
    -- start would leave items 3 and 5 waiting behind the long item 1
    local pool <close> = mp.Pool(2)
    local pids = {}
    for i, pid in pool:imap_unordered(function(d) mp.sleep(d) return mp.getpid() end,
                                      { 1.5, 0.02, 0.02, 0.02, 0.02 }) do
      pids[i] = pid
    end
    for i = 2, 5 do assert.are_not.equal(pids[1], pids[i], "item " .. i .. " waited behind item 1") end
  end)

  it("yields results as they complete", function()
    local pool <close> = mp.Pool(2)
    local order = {}
    for _, v in pool:imap_unordered(function(x) mp.sleep(x == 1 and 0.5 or 0.01) return x end, range(4), 1) do
      order[#order + 1] = v
    end
    assert.are_not.equal(1, order[1])
    assert.are.equal(4, #order)
  end)

  it("raises a task's error", function()
    local pool <close> = mp.Pool(2)
    local ok, err = pcall(function()
      for _ in pool:imap_unordered(function(x) if x == 7 then error("seven") end return x end, range(10)) do end
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("seven", 1, true))
    assert.are.same({ 2 }, pool:map(double, { 1 }))
  end)
end)

---------------------------------------------------------------------------
describe("Pool (a task's function)", function()
  -- how many copies of this function the worker has run (kept in its globals)
  local getinfo = debug.getinfo        -- a library value: the worker's own
  local function copies()
    local seen = SEEN_COPIES or {}
    SEEN_COPIES = seen
    seen[getinfo(1, "f").func] = true
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    return n
  end

  it("is decoded once by a worker and reused by later calls when it has no state", function()
    local pool <close> = mp.Pool(1)
    for _ = 1, 5 do assert.are.equal(1, pool:apply(copies)) end
    assert.are.same({ 1, 1, 1 }, pool:map(copies, { 1, 2, 3 }, 1))
    assert.are.equal(1, pool:apply_async(copies):get())
  end)

  it("travels afresh with every call when it has upvalues it could change", function()
    local pool <close> = mp.Pool(1)
    local n, t = 0, {}
    local function bump() n = n + 1; return n end
    local function put(x) t[#t + 1] = x; return #t end
    for i = 1, 4 do
      assert.are.equal(1, pool:apply(bump))
      assert.are.equal(1, pool:apply(put, { i }))
    end
    assert.are.equal(0, n)
  end)

  it("travels afresh when it assigns to an upvalue that is nil", function()
    local pool <close> = mp.Pool(1)
    local count
    local function f() count = (count or 0) + 1; return count end
    for _ = 1, 4 do assert.are.equal(1, pool:apply(f)) end
    assert.are.same({ 1, 2, 3 }, pool:map(f, { 1, 2, 3 }, 3))
    assert.are.same({ 1, 2, 3 }, pool:map(f, { 1, 2, 3 }, 3))
    assert.is_nil(count)
  end)

  it("may be any callable value, also one cached by the workers", function()
    local smt = getmetatable("")
    smt.__call = function(s, x) return s .. x end
    local ok, res = pcall(function()
      local pool <close> = mp.Pool(1)
      return { pool:map("p", { 1, 2, 3, 4 }, 1), pool:apply("q", { 1 }) }
    end)
    smt.__call = nil
    assert(ok, res)
    assert.are.same({ { "p1", "p2", "p3", "p4" }, "q1" }, res)
  end)

  it("fails each call alike when the worker cannot load it, and the worker goes on", function()
    local pool <close> = mp.Pool(1)
    local function same() return "same" end
    assert.are.equal("same", pool:apply(same))
    -- a library value the worker, forked before it was loaded, does not have
    package.loaded["lmp.spec.late"] = { v = 42 }
    local late = package.loaded["lmp.spec.late"]
    local function f() return late.v end
    for _ = 1, 2 do
      assert_error_with("lmp: decode: module lmp.spec.late is not loaded in this process", pool.apply, pool, f)
      assert_error_with("lmp: decode: module lmp.spec.late is not loaded in this process", pool.map, pool, f, { 1, 2 })
    end
    assert.are.equal("same", pool:apply(same))
    assert.are.same({ 2, 4 }, pool:map(double, { 1, 2 }))
    package.loaded["lmp.spec.late"] = nil
  end)

  it("gives a job its own function when ids start over while an earlier job has input left", function()
    -- ids wrap every 6 jobs here.  Job 5 uses fa, sent in job 1's time as
    -- function 1; when the ids start over it still has items to send, and
    -- the next job must neither take id 1 nor run fa
    local pool <close> = mp.Pool{ processes = 1, _jobidmax = 6 }
    local function fa(x) mp.sleep(0.001); return "A" .. x end
    local function fb(x) return "B" .. x end
    assert.are.equal("A0", pool:apply(fa, { 0 }))               -- job 1
    for i = 2, 4 do assert.are.equal(i, pool:apply(double, { i }) / 2) end
    local a = pool:map_async(fa, range(200), 1)                   -- job 5
    local c = pool:apply_async(double, { 3 })                     -- job 6
    local b = pool:map_async(fb, { 1, 2, 3 }, 1)                  -- ids wrap
    assert.are.same({ "B1", "B2", "B3" }, b:get())
    assert.are.equal(6, c:get())
    local want = {}
    for i = 1, 200 do want[i] = "A" .. i end
    assert.are.same(want, a:get())
  end)

  it("keeps a new job that took a finished iterator's id when that iterator is called again", function()
    -- in a fresh interpreter with a time limit: the failure this guards
    -- against is the new imap waiting forever
    local out, status = support.run_lua([[
      local pool <close> = mp.Pool{ processes = 1, _jobidmax = 3 }
      local function double(x) return 2 * x end
      local old = pool:imap(double, { 1 })                    -- job 1
      local i, v = old()
      assert(i == 1 and v == 2 and old() == nil)              -- done, forgotten
      assert(pool:apply(double, { 5 }) == 10)                 -- job 2
      assert(pool:apply(double, { 6 }) == 12)                 -- job 3
      local new = pool:imap(function(x) mp.sleep(0.02) return x end, { 1, 2, 3 })  -- id 1
      assert(old() == nil)                                    -- must not forget `new`
      local got = {}
      for _, v in new do got[#got + 1] = v end
      print("got=" .. table.concat(got, ","))
    ]], 20)
    assert.are.equal(0, status, out)
    assert.are.equal("1,2,3", support.fields(out).got, out)
  end)

  it("finds a free id after wrapping twice within one call", function()
    local pool <close> = mp.Pool{ processes = 1, _jobidmax = 4 }
    local function nap(t) return function() mp.sleep(t) return t end end  -- one id each
    assert.are.same({ 0, 0 }, { pool:apply(nap(0)), pool:apply(nap(0)) })  -- ids 1, 2
    local r3, r4 = pool:apply_async(nap(0.1)), pool:apply_async(nap(0.1))   -- ids 3, 4
    local r1, r2 = pool:apply_async(nap(0.3)), pool:apply_async(nap(0.3))   -- wrap: 1, 2
    assert.are.same({ 0.1, 0.1 }, { r3:get(), r4:get() })
    -- ids 3 and 4 are free again, but were busy at the last wrap
    assert.are.equal(0, pool:apply_async(nap(0)):get())
    assert.are.same({ 0.3, 0.3 }, { r1:get(), r2:get() })
  end)

  it("puts back an upvalue a stateless task assigned to, for the next call", function()
    local pool <close> = mp.Pool(1)
    local lib = string                   -- a library value: the task is kept
    local function task(x)
      local r = lib.rep(x, 2)
      lib = { rep = function() return "state from an earlier call" end }
      return r
    end
    for _ = 1, 3 do assert.are.equal("abab", pool:apply(task, { "ab" })) end
    assert.are.same({ "xx", "yy" }, pool:map(task, { "x", "y" }, 1))
  end)

  it("stays right when the pool's job ids start over", function()
    -- ids wrap every 12 calls here (a spec-only option).  Each round sends
    -- `same` (id 1), 9 closures, `same` again (cached: not sent) and one
    -- more closure: a worker that kept its cache across the wrap evicts the
    -- previous round's id 1 in the middle of the round, losing `same`
    local pool <close> = mp.Pool{ processes = 1, _jobidmax = 12 }
    local function same() return "same" end
    for round = 1, 6 do
      assert.are.equal("same", pool:apply(same))
      for i = 1, 9 do
        local k = round * 100 + i
        assert.are.equal(k, pool:apply(function() return k end))
      end
      assert.are.equal("same", pool:apply(same))
      assert.are.equal(-round, pool:apply(function() return -round end))
    end
  end)
end)

describe("Pool:close", function()
  it("refuses new work but lets queued work finish", function()
    local pool <close> = mp.Pool(2)
    local r = pool:apply_async(function() mp.sleep(0.2) return "done" end)
    pool:close()
    for _, call in ipairs({ "apply", "apply_async", "map", "map_async", "imap", "imap_unordered", "starmap", "starmap_async" }) do
      assert_error_with("lmp: pool is closed", pool[call], pool, double, { 1 })
    end
    pool:join()
    assert.are.equal("done", r:get())
  end)
end)

describe("Pool:join", function()
  it("raises before close or terminate", function()
    local pool <close> = mp.Pool(1)
    assert_error_with("lmp: join before close or terminate", pool.join, pool)
  end)

  it("waits for outstanding async work and runs its callbacks", function()
    local pool = mp.Pool(2)
    local got = {}
    for i = 1, 5 do
      pool:apply_async(function(x) mp.sleep(0.05) return x end, { i }, function(x) got[#got + 1] = x end)
    end
    pool:close()
    pool:join()
    table.sort(got)
    assert.are.same({ 1, 2, 3, 4, 5 }, got)
  end)

  it("is fine after terminate, and twice", function()
    local pool = mp.Pool(1)
    pool:terminate()
    pool:join()
    pool:join()
  end)
end)

describe("Pool:terminate", function()
  it("fails pending results with 'lmp: pool terminated' and kills workers at once", function()
    local pool = mp.Pool(2)
    local pids = worker_pids(pool, 2)
    local r = pool:apply_async(function() mp.sleep(30) end)
    local m = pool:map_async(function() mp.sleep(30) end, range(4), 1)
    local t0 = mp.time()
    pool:terminate()
    assert.is_true(mp.time() - t0 < 2)
    assert_error_with("lmp: pool terminated", r.get, r)
    assert_error_with("lmp: pool terminated", m.get, m)
    assert.is_true(r:ready())
    assert.is_false(r:successful())
    for _, pid in ipairs(pids) do assert.is_true(gone(pid)) end
    pool:terminate()                              -- idempotent
    assert_error_with("lmp: pool is terminated", pool.map, pool, double, { 1 })
  end)
end)

describe("Pool (review regressions)", function()
  it("passes hundreds of arguments to apply and to the initializer", function()
    local args = {}
    for i = 1, 300 do args[i] = i end
    local pool <close> = mp.Pool{ processes = 1, initializer = function(...) N_INIT = select("#", ...) end,
                                  initargs = args }
    assert.are.equal(300, pool:apply(function(...) return select("#", ...) end, args))
    assert.are.equal(300, pool:apply(function() return N_INIT end))
    assert.are.equal(300, (pool:starmap(function(...) return select("#", ...) end, { args }))[1])
  end)

  it("raises the same error again from an imap_unordered iterator instead of hanging", function()
    local pool <close> = mp.Pool(2)
    local it = pool:imap_unordered(function(x)
      if x == 1 then error("bad item 1") end
      mp.sleep(0.2)
      return x
    end, { 1, 2, 3, 4 })
    local first = select(2, pcall(it))
    assert.truthy(tostring(first):find("bad item 1", 1, true))
    for _ = 1, 3 do
      local ok, e = pcall(it)
      assert.is_false(ok)
      assert.truthy(tostring(e):find("bad item 1", 1, true))
    end
    assert.are.equal(4, pool:apply(function() return 4 end))
  end)

  it("fails a map whose input iterator uses the same pool, instead of losing items", function()
    local pool <close> = mp.Pool(1)
    local i = 0
    local function gen()
      i = i + 1
      if i <= 3 then return pool:apply(function(x) return x end, { i }) end
    end
    assert_error_with("lmp: a pool's input iterator cannot use the same pool",
      pool.map, pool, function(x) return x end, gen)
    assert.are.equal(5, pool:apply(function() return 5 end))
  end)

  it("keeps a worker's setup errors inside the worker (initargs whose __index raises)", function()
    local out = run_lua([[
      local bad = setmetatable({}, { __index = function() error("initargs boom") end })
      local ok, e = pcall(mp.Pool, { processes = 1, initializer = function() end, initargs = bad })
      print("pid=" .. mp.getpid() .. " ok=" .. tostring(ok))
      print("err=" .. tostring(e):match("[^\n]*"))
    ]])
    local lines = {}
    for l in out:gmatch("pid=[^\n]*") do lines[#lines + 1] = l end
    assert.are.equal(1, #lines, out)                 -- only the parent got here
    assert.truthy(out:find("ok=false", 1, true), out)
    assert.truthy(out:find("initargs boom", 1, true), out)
  end)

  it("leaves an inherited pool alone when a child leaves its <close> scope", function()
    local out = run_lua([[
      local pool <close> = mp.Pool(1)
      local pid = mp.fork()
      if pid == 0 then
        local ok = pcall(function() local p2 <close> = pool end)
        print("child_ok=" .. tostring(ok))
        os.exit(0)
      end
      mp.wait(pid)
      print("parent=" .. pool:apply(function() return 42 end))
    ]])
    local f = fields(out)
    assert.are.equal("true", f.child_ok, out)
    assert.are.equal("42", f.parent, out)
  end)
end)

---------------------------------------------------------------------------
-- Async work starts at once; polling makes progress (issue 10).
---------------------------------------------------------------------------
describe("Pool:apply_async (work starts at once)", function()
  local pool
  before_each(function() pool = mp.Pool(2) end)
  after_each(function() pool:terminate() end)

  it("starts the task before any other pool call", function()
    local path = support.tmpname()
    local r = pool:apply_async(function(p)
      local f = assert(io.open(p, "w")) f:write("ran") f:close()
      return true
    end, { path })
    -- no pool call here: the worker must have the task already
    local ran = wait_until(function() return slurp(path) == "ran" end, 10)
    os.remove(path)
    assert.is_true(ran, "the task did not run while the parent waited elsewhere")
    assert.is_true(r:get())
  end)

  it("runs while the parent sleeps, so the parent does not wait twice", function()
    local r = pool:apply_async(function() return mp.time() end)
    mp.sleep(1)
    local slept = mp.time()
    assert.is_true(r:get() < slept, "the task started only after the parent came back")
  end)

  it("keeps every worker busy with a large map_async while the parent computes", function()
    local r = pool:map_async(function(x) mp.sleep(0.01) return mp.time() end, range(60))
    local t0 = mp.time()
    while mp.time() - t0 < 3 do end    -- the parent computes, no pool call
    local back = mp.time()
    local done = r:get()
    table.sort(done)
    assert.is_true(done[#done] < back, "some tasks ran only after the parent came back")
  end)

  it("lets mp.wait() reap a worker whose task exited, instead of blocking", function()
    local out = run_lua([[
      local pool = mp.Pool(1)
      local r = pool:apply_async(function() os.exit(7) end)
      local pid, how, code = mp.wait()
      print("how=" .. tostring(how))
      print("code=" .. tostring(code))
      local ok, err = pcall(r.get, r, 10)
      print("err=" .. tostring(err):gsub("\n", " "))
      print("after=" .. pool:apply(function() return 1 end))
      pool:terminate()
    ]], 30)
    local f = fields(out)
    assert.equal("exited", f.how, out)
    assert.equal("7", f.code, out)
    assert.truthy(f.err:find("exited with code 7", 1, true), out)
    assert.equal("1", f.after, out)
  end)
end)

describe("AsyncResult:ready (polling)", function()
  it("becomes true in a loop that only polls ready() and sleeps", function()
    local out = run_lua([[
      local pool = mp.Pool(1)
      local r = pool:apply_async(function() mp.sleep(0.2) return 5 end)
      local polls = 0
      while not r:ready() do mp.sleep(0.05) polls = polls + 1 end
      print("v=" .. r:get())
      print("successful=" .. tostring(r:successful()))
      local r2 = pool:apply_async(function() mp.sleep(0.2) return 6 end)
      while not r2:wait(0) do mp.sleep(0.05) end
      print("w=" .. r2:get(0))
      pool:terminate()
    ]], 30)
    local f = fields(out)
    assert.equal("5", f.v, out)
    assert.truthy(out:find("successful=true", 1, true), out)
    assert.equal("6", f.w, out)
  end)

  it("runs the callback of an empty map_async before get or wait returns", function()
    local pool <close> = mp.Pool(1)
    local got
    local r = pool:map_async(function(x) return x end, {}, nil, function(v) got = v end)
    assert.same({}, r:get())
    assert.same({}, got)
    local got2
    local r2 = pool:map_async(function(x) return x end, {}, nil, function(v) got2 = v end)
    assert.is_true(r2:wait(0))
    assert.same({}, got2)
  end)
end)

describe("Pool:imap (an abandoned iterator)", function()
  it("stops taking input, so the next map does not wait for an endless input", function()
    local out = run_lua([[
      local pool = mp.Pool(2)
      local n = 0
      local it = pool:imap(function(x) return x end, function() n = n + 1 return n end)
      print("first=" .. it())
      it = nil                          -- dropped, not collected
      print("map=" .. table.concat(pool:map(function(x) return x * 2 end, {1, 2, 3}), ","))
      print("bounded=" .. tostring(n < 100000))
      pool:close() pool:join()          -- the dropped job does not hold join
      print("joined=yes")
    ]], 30)
    local f = fields(out)
    assert.equal("1", f.first, out)
    assert.equal("2,4,6", f.map, out)
    assert.equal("true", f.bounded, out)
    assert.equal("yes", f.joined, out)
  end)
end)

describe("Pool:map (proxy tables)", function()
  local pool
  setup(function() pool = mp.Pool(2) end)
  teardown(function() pool:terminate() end)

  it("maps what t[i] sees for a table with __index and __len", function()
    local proxy = setmetatable({}, {
      __index = function(_, i) return i * 10 end,
      __len = function() return 3 end,
    })
    assert.same({ 11, 21, 31 }, pool:map(function(x) return x + 1 end, proxy))
    assert.same({ 11, 21, 31 }, pool:map(function(x) return x + 1 end, proxy, 1))
  end)

  it("ends at the first missing item when __len claims more than exists", function()
    local t = setmetatable({ 1, 2, 3 }, { __len = function() return math.maxinteger end })
    assert.same({ 2, 4, 6 }, pool:map(double, t))
    local r = {}
    for _, v in pool:imap(double, t) do r[#r + 1] = v end
    assert.same({ 2, 4, 6 }, r)
  end)

  it("refuses a length that is not a non-negative integer", function()
    local t = setmetatable({}, { __len = function() return "many" end })
    assert_error_with("lmp: iterable's length must be a non-negative integer", pool.map, pool, double, t)
  end)
end)

describe("mp.Pool (resources)", function()
  it("reaps the workers of a collected pool within the collection", function()
    local pool = mp.Pool(2)
    local pids = worker_pids(pool, 2)
    pool = nil
    collectgarbage()
    collectgarbage()
    for _, pid in ipairs(pids) do assert.is_true(gone(pid), "worker " .. pid .. " is left") end
  end)

  it("kills and reaps the workers it forked when it runs out of fds half-way", function()
    local script = support.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(("package.cpath = %q .. package.cpath\n"):format(support.ROOT .. "/?.so;"),
      'local mp = require "lmp"\n',
      'local ok, err = pcall(mp.Pool, 16)\n',
      'print("ok=" .. tostring(ok))\n',
      'print("err=" .. tostring(err))\n',
      'local lfs = require "lfs"\n',
      'local n = 0\n',
      'for name in lfs.dir("/proc") do\n',
      '  local s = name:match("^%d+$") and io.open("/proc/" .. name .. "/stat")\n',
      '  if s then if tonumber(s:read("a"):match("^%d+ %b() %a (%d+)")) == mp.getpid() then n = n + 1 end s:close() end\n',
      'end\n',
      'print("children=" .. n)\n')
    f:close()
    local out = support.run_sh("prlimit --nofile=14 lua5.4 " .. support.q(script), 30)
    os.remove(script)
    local r = fields(out)
    assert.equal("false", r.ok, out)
    assert.truthy(r.err:find("Too many open files", 1, true), out)
    assert.equal("0", r.children, out)
  end)

  it("kills and reaps the workers it forked when fork fails half-way (ulimit -u)", function()
    if io.open("/proc/self/status"):read("a"):match("Uid:%s+(%d+)") ~= "0" then
      pending("needs root, to run the check as another user under a process limit")
      return
    end
    local script = support.tmpname() .. ".lua"
    local f = assert(io.open(script, "w"))
    f:write(("package.cpath = %q .. package.cpath\n"):format(support.ROOT .. "/?.so;"),
      'local mp = require "lmp"\n',
      'local ok, err = pcall(mp.Pool, 8)\n',
      'print("ok=" .. tostring(ok))\n',
      'print("err=" .. tostring(err))\n')
    f:close()
    os.execute("chmod 644 " .. support.q(script))
    -- root ignores RLIMIT_NPROC: run as nobody, with room for 2 processes
    local out = support.run_sh(
      "setpriv --reuid=65534 --regid=65534 --clear-groups prlimit --nproc=3 lua5.4 " .. support.q(script), 30)
    os.remove(script)
    local r = fields(out)
    if r.ok == "true" then pending("the process limit did not apply here: " .. out) return end
    assert.equal("false", r.ok, out)
    assert.truthy(r.err:find("fork: Resource temporarily unavailable", 1, true), out)
    -- nothing of nobody's is left running the script (read from /proc: no
    -- pgrep, which the ASan runtime make test-asan preloads can hang)
    local function survivors()
      local n = 0
      for name in lfs.dir("/proc") do
        if name:match("^%d+$") then
          local uid = (slurp("/proc/" .. name .. "/status") or ""):match("\nUid:%s+(%d+)")
          local cmd = slurp("/proc/" .. name .. "/cmdline") or ""
          if uid == "65534" and cmd:find(script, 1, true) then n = n + 1 end
        end
      end
      return n
    end
    assert.is_true(wait_until(function() return survivors() == 0 end, 5), "a worker survived")
  end)
end)

describe("Pool calls from a coroutine", function()
  it("raise 'lmp: interrupted' on SIGINT, as from the main thread", function()
    local out = run_lua([[
      local pool = mp.Pool(2)
      local parent = mp.getpid()
      local helper = assert(mp.fork())
      if helper == 0 then mp.sleep(0.3) mp.kill(parent, "INT") os.exit(0) end
      local co = coroutine.create(function()
        return pool:map(function() mp.sleep(20) end, {1, 2}, 1)
      end)
      local ok, err = coroutine.resume(co)
      print("ok=" .. tostring(ok))
      print("err=" .. tostring(err):gsub("\n", " "))
      mp.wait(helper)
    ]], 30)
    local f = fields(out)
    assert.equal("false", f.ok, out)
    assert.truthy(f.err:find("lmp: interrupted", 1, true), out)
  end)
end)

describe("AsyncResult:get (timeouts)", function()
  local pool
  setup(function() pool = mp.Pool(1) end)
  teardown(function() pool:terminate() end)

  it("takes math.huge and other huge timeouts as no limit", function()
    assert.equal(1, pool:apply_async(function() return 1 end):get(math.huge))
    assert.equal(2, pool:apply_async(function() return 2 end):get(1e300))
    assert.is_true(pool:apply_async(function() return 3 end):wait(math.huge))
  end)

  it("says that a NaN timeout is not a number", function()
    local r = pool:apply_async(function() return 1 end)
    assert_error_with("lmp: timeout must be a number, got nan", r.get, r, 0 / 0)
    assert.equal(1, r:get())
  end)
end)
