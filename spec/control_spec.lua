-- Control over running work (API.md "Controlling work"; issue 15):
-- timeouts that stop a task, progress, futures, event loops, traces,
-- Process <close>, options tables and the errors of a mistyped call.
package.cpath = "./?.so;" .. package.cpath

local mp = require "lmp"
local cjson = require "cjson"
local lfs = require "lfs"
local support = require "spec.support"

local run_lua, fields, gone, wait_until = support.run_lua, support.fields, support.gone, support.wait_until
local assert_error_with, children, count = support.assert_error_with, support.children, support.count

local range, worker_pids = support.range, support.worker_pids

describe("a task timeout", function()
  local pool
  before_each(function() pool = mp.Pool(2) end)
  after_each(function() pool:terminate() end)

  it("fails the item that runs too long, and kills and replaces exactly its worker", function()
    local before = worker_pids(pool, 2)
    local ok, err = pcall(pool.map, pool, function(x)
      if x == 3 then mp.sleep(30) end
      return x
    end, range(6), { chunksize = 1, timeout = 0.5 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("lmp: task timed out after 0.5 s", 1, true), err)
    local after = worker_pids(pool, 2)
    local kept = 0
    for _, a in ipairs(after) do
      for _, b in ipairs(before) do if a == b then kept = kept + 1 end end
    end
    assert.are.equal(1, kept, "exactly one worker should have been replaced")
    assert.are.equal(1, #before - kept)
    assert.is_true(wait_until(function()
      for _, b in ipairs(before) do
        local still = false
        for _, a in ipairs(after) do if a == b then still = true end end
        if not still and not gone(b) then return false end
      end
      return true
    end, 5), "the timed-out worker was not reaped")
  end)

  it("counts per item: the other items of its chunk keep their results", function()
    local got = {}
    local ok, err = pcall(function()
      for i, v in pool:imap(function(x)
        if x == 3 then mp.sleep(30) end
        return x * 10
      end, range(5), { chunksize = 5, timeout = 0.5 }) do got[i] = v end
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("timed out after 0.5 s", 1, true), err)
    assert.are.same({ 10, 20 }, got)
  end)

  it("does not touch items that end in time, and the pool's default applies to every call", function()
    pool:terminate()
    pool = mp.Pool{ processes = 2, timeout = 0.5 }
    assert.are.same({ 2, 4, 6 }, pool:map(function(x) mp.sleep(0.05) return 2 * x end, { 1, 2, 3 }))
    local r = pool:apply_async(function() mp.sleep(30) end)
    assert_error_with("lmp: task timed out after 0.5 s", r.get, r)
    -- a call's own timeout wins over the pool's
    assert.are.equal(7, pool:apply(function() mp.sleep(0.8) return 7 end, nil, { timeout = 5 }))
    -- and math.huge lifts the default for that call (a review found it did not)
    assert.are.equal(8, pool:apply(function() mp.sleep(0.8) return 8 end, nil, { timeout = math.huge }))
    assert.are.same({ 9 }, pool:map(function() mp.sleep(0.8) return 9 end, { 1 }, { timeout = math.huge }))
  end)

  it("works for apply_async with an options table and its error_callback", function()
    local seen
    local r = pool:apply_async(function() mp.sleep(30) end, nil,
      { timeout = 0.3, error_callback = function(e) seen = e end })
    assert.is_true(r:wait(20))
    assert.is_false(r:successful())
    assert.truthy(tostring(seen):find("timed out after 0.3 s", 1, true))
  end)

  it("refuses a timeout that is not a positive number", function()
    assert_error_with("lmp: timeout must be a positive number of seconds", pool.map, pool, print, { 1 }, { timeout = 0 })
    assert_error_with("lmp: timeout must be a number of seconds, got string", pool.map, pool, print, { 1 }, { timeout = "1" })
    assert_error_with("lmp: timeout must be a positive number of seconds, got NaN", pool.map, pool, print, { 1 }, { timeout = 0 / 0 })
    assert_error_with("lmp: Pool timeout must be a positive number of seconds, got -1", mp.Pool, { timeout = -1 })
  end)
end)

describe("progress", function()
  local pool
  setup(function() pool = mp.Pool(2) end)
  teardown(function() pool:terminate() end)

  it("calls a function in the parent with done and total, ending at total", function()
    local calls, last = 0, nil
    local me = mp.getpid()
    pool:map(function(x) return x end, range(20), { chunksize = 1, progress = function(done, total)
      assert(mp.getpid() == me, "progress ran in a worker")
      calls = calls + 1
      last = { done, total }
    end })
    assert.is_true(calls >= 1)
    assert.are.same({ 20, 20 }, last)
  end)

  it("gives total nil for an iterator input", function()
    local last, n = nil, 0
    local i = 0
    for _ in pool:imap(function(x) return x end, function() i = i + 1 if i <= 10 then return i end end,
      { progress = function(done, total) last = { done, total } end }) do n = n + 1 end
    assert.are.equal(10, n)
    assert.are.same({ 10 }, last)
  end)

  it("stops with its call: a map left by an error does not run on behind later calls", function()
    local ok, err = pcall(pool.map, pool, function(x) mp.sleep(0.05) return x end, range(6),
      { chunksize = 1, progress = function() error("progress boom") end })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("progress boom", 1, true), err)
    -- before the fix the dropped map's progress raised again inside this get
    assert.are.same({ 1, 2, 3, 4 }, pool:map_async(function(x) return x end, range(4)):get())
    -- another result's callback raising inside a map ends that map too
    local calls = 0
    pool:apply_async(function() return 1 end, nil, { callback = function() error("callback boom") end })
    ok, err = pcall(pool.map, pool, function(x) mp.sleep(0.05) return x end, range(6),
      { chunksize = 1, progress = function() calls = calls + 1 end })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("callback boom", 1, true), err)
    local seen = calls
    assert.are.equal("later", pool:apply(function() mp.sleep(0.4) return "later" end))
    assert.are.equal(seen, calls, "the abandoned map still reported progress")
  end)

  it("draws nothing when stderr is not a terminal", function()
    local out = run_lua([[
      local pool = mp.Pool(2)
      local r = pool:map(function(x) return x end, {1, 2, 3, 4}, { progress = true })
      print("n=" .. #r)
      pool:terminate()
    ]], 30)
    assert.are.equal("4", fields(out).n, out)
    assert.is_nil(out:find("%", 1, true), out)
    assert.is_nil(out:find("\r", 1, true), out)
  end)

  it("draws a one-line bar on stderr when it is a terminal (a pty, through tmux)", function()
    if not os.execute("command -v tmux >/dev/null 2>&1") then pending("tmux is not installed") return end
    local script = support.tmpname() .. ".lua"
    local done = support.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(("package.cpath = %q .. package.cpath\n"):format(support.ROOT .. "/?.so;"),
      'local mp = require "lmp"\n',
      'local pool = mp.Pool(2)\n',
      'pool:map(function(x) mp.sleep(0.02) return x end, (function() local t = {} for i = 1, 40 do t[i] = i end return t end)(), { chunksize = 1, progress = true })\n',
      -- a loop left early ends its bar's line too (a review found the next
      -- output glued to the bar)
      'for i in pool:imap(function(x) mp.sleep(0.3) return x end, {1, 2, 3, 4, 5, 6, 7, 8}, { chunksize = 1, progress = true }) do if i == 3 then break end end\n',
      'io.stderr:write("AFTER-BREAK\\n")\n',
      'pool:terminate()\n',
      ('io.open(%q, "w"):close()\n'):format(done))
    f:close()
    local session = "lmp-progress-" .. mp.getpid()
    os.execute(("tmux new-session -d -s %s -x 120 -y 10 'lua5.4 %s; sleep 30'"):format(session, script))
    local ok = wait_until(function() return support.slurp(done) ~= nil end, 30)
    local pane = io.popen("tmux capture-pane -p -t " .. session):read("a")
    os.execute("tmux kill-session -t " .. session .. " 2>/dev/null")
    os.remove(script)
    os.remove(done)
    assert.is_true(ok, "the script did not finish")
    assert.truthy(pane:find("40/40 100%", 1, true), pane)
    assert.truthy(pane:find("/s", 1, true), pane)
    assert.truthy(pane:find("\nAFTER%-BREAK"), pane)
  end)
end)

describe("Pool:submit and mp.as_completed", function()
  local pool
  setup(function() pool = mp.Pool(2) end)
  teardown(function() pool:terminate() end)

  it("submit takes the arguments as varargs, nils included", function()
    local r = pool:submit(function(...) return select("#", ...), ... end, 1, nil, 3)
    assert.are.same({ 3, 1, nil, 3 }, { r:get() })
  end)

  it("yields results as they finish, not as they were submitted", function()
    local slow = pool:submit(function() mp.sleep(0.5) return "slow" end)
    local quick = pool:submit(function() return "quick" end)
    local order = {}
    for r in mp.as_completed({ slow, quick }) do order[#order + 1] = r:get() end
    assert.are.same({ "quick", "slow" }, order)
  end)

  it("raises lmp: timeout when results are late, and refuses what is not an AsyncResult", function()
    local r = pool:submit(function() mp.sleep(1) end)
    assert_error_with("lmp: timeout", function() for _ in mp.as_completed({ r }, 0.05) do end end)
    assert_error_with("lmp: as_completed takes AsyncResults", mp.as_completed, { 5 })
    r:wait()
  end)

  it("follows results of several pools", function()
    local other <close> = mp.Pool(1)
    local a = other:submit(function() mp.sleep(0.3) return "a" end)
    local b = pool:submit(function() return "b" end)
    local order = {}
    for r in mp.as_completed({ a, b }) do order[#order + 1] = r:get() end
    assert.are.same({ "b", "a" }, order)
  end)

  it("orders results of several pools by when they finished, not by each pool's count", function()
    local other <close> = mp.Pool(1)
    local rs = {}
    for i = 1, 3 do rs[i] = pool:submit(function(x) return "a" .. x end, i) end
    for _, r in ipairs(rs) do r:wait() end
    rs[4] = other:submit(function() mp.sleep(0.1) return "b1" end)
    rs[4]:wait()
    local order = {}
    for r in mp.as_completed(rs) do order[#order + 1] = r:get() end
    -- (the a's ran on two workers: their own order is their finishing times')
    assert.are.equal("b1", order[4], table.concat(order, " "))
  end)

  it("refuses results of a pool another process owns (a forked child)", function()
    local r = pool:submit(function() mp.sleep(0.3) return 42 end)
    local out = support.tmpname()
    local pid = assert(mp.fork())
    if pid == 0 then
      local ok, err = pcall(function() for x in mp.as_completed({ r }, 5) do return x:get() end end)
      local f = io.open(out, "w")
      f:write(tostring(ok), " ", tostring(err))
      f:close()
      os.exit(0)
    end
    mp.wait(pid)
    local said = support.slurp(out, "")
    os.remove(out)
    assert.truthy(said:find("false lmp: this AsyncResult belongs to process " .. mp.getpid(), 1, true), said)
    assert.are.equal(42, r:get())
  end)

  it("raises lmp: interrupted on SIGINT while results of several pools are running, and stops them", function()
    local out = run_lua([[
      local a, b = mp.Pool(1), mp.Pool(1)
      local rs = { a:submit(function() mp.sleep(20) end), b:submit(function() mp.sleep(20) end) }
      local parent = mp.getpid()
      local helper = assert(mp.fork())
      if helper == 0 then mp.sleep(0.3) mp.kill(parent, "INT") os.exit(0) end
      local t0 = mp.time()
      local ok, err = pcall(function() for r in mp.as_completed(rs) do r:get() end end)
      print("ok=" .. tostring(ok))
      print("err=" .. tostring(err):gsub("\n", " "))
      print("elapsed=" .. (mp.time() - t0))
      mp.wait(helper)
      print("a=" .. tostring(select(2, pcall(rs[1].get, rs[1], 5))))
    ]], 30)
    local f = fields(out)
    assert.are.equal("false", f.ok, out)
    assert.truthy((f.err or ""):find("lmp: interrupted", 1, true), out)
    assert.is_true(tonumber(f.elapsed) < 10, out)
    assert.truthy((f.a or ""):find("lmp: interrupted", 1, true), out)
  end)
end)

describe("AsyncResult:cancel", function()
  it("takes back work no worker has yet, and not work already handed out", function()
    local pool <close> = mp.Pool(1)
    local rs = {}
    -- the worker takes at most 64 tasks at once: the later ones wait here
    for i = 1, 100 do rs[i] = pool:submit(function(x) mp.sleep(0.01) return x end, i) end
    assert.is_false(rs[1]:cancel())
    assert.is_true(rs[100]:cancel())
    assert_error_with("lmp: cancelled", rs[100].get, rs[100])
    assert.is_false(rs[100]:successful())
    assert.are.equal(99, rs[99]:get())
    assert.is_false(rs[99]:cancel())     -- done already
  end)
end)

describe("AsyncResult:info", function()
  it("tells the worker's pid, wall times, CPU seconds and peak RSS of the task", function()
    local pool <close> = mp.Pool(1)
    local r = pool:submit(function()
      local t0 = os.clock()
      while os.clock() - t0 < 0.05 do end
      return mp.getpid()
    end)
    local pid = r:get()
    local info = r:info()
    assert.are.equal(pid, info.pid)
    assert.is_true(info.started <= info.ended)
    assert.is_true(math.abs(info.started - mp.time()) < 60)
    assert.is_true(info.cpu > 0)
    assert.is_true(info.maxrss > 0)
  end)

  it("tells the worker's pid while the task runs, before anything else is known", function()
    local ev, who = mp.Event(), mp.Value("i", 0)   -- before the pool: its workers share them
    local pool <close> = mp.Pool(1)
    local r = pool:submit(function() who.value = mp.getpid() ev:set() mp.sleep(30) end)
    assert.is_true(ev:wait(20))
    local info = r:info()
    assert.are.equal(who.value, info.pid)
    assert.is_nil(info.ended)
    pool:terminate()
  end)
end)

describe("Pool:fileno and Pool:poll", function()
  local dir
  setup(function()
    dir = support.tmpname()
    assert(os.execute("mkdir -p " .. support.q(dir)))
    assert(os.execute(("cc -O2 -shared -fPIC -I/usr/include/lua5.4 -o %s/pollfd.so %s/spec/helpers/pollfd.c"):format(
      support.q(dir), support.q(support.ROOT))))
    package.cpath = dir .. "/?.so;" .. package.cpath
  end)
  teardown(function()
    os.remove(dir .. "/pollfd.so")
    os.remove(dir)
  end)

  it("let an event loop drive the pool: wait on the fd, collect with poll()", function()
    local pollfd = require "pollfd"
    local pool <close> = mp.Pool(2)
    local fd = pool:fileno()
    assert.are.equal("number", math.type(fd) and "number")
    local got = {}
    local rs = {}
    for i = 1, 6 do
      rs[i] = pool:apply_async(function(x) mp.sleep(0.05 * (x % 3)) return x * x end, { i }, function(v) got[#got + 1] = v end)
    end
    local loops, finished = 0, 0
    while finished < 6 and loops < 1000 do
      loops = loops + 1
      local ready = pollfd.poll({ fd }, 5000)
      assert.are.equal(1, #ready, "the pool's fd was not readable within 5 s")
      finished = finished + pool:poll()
    end
    assert.are.equal(6, finished)
    table.sort(got)
    assert.are.same({ 1, 4, 9, 16, 25, 36 }, got)
    assert.are.equal(0, pool:poll())
  end)

  it("p.sentinel is readable once the child has ended", function()
    local pollfd = require "pollfd"
    local p = mp.Process(function() mp.sleep(0.2) end):start()
    local s = p.sentinel
    assert.are.equal(0, #pollfd.poll({ s }, 0))
    assert.are.equal(1, #pollfd.poll({ s }, 5000))
    assert.is_true(p:join(5))
    assert.are.equal(0, p.exitcode)
  end)
end)

describe("a trace", function()
  it("writes valid JSON with one slice per task and the loss of a worker", function()
    local path = support.tmpname() .. ".json"
    local pool = mp.Pool{ processes = 2, trace = path }
    pool:map(function(x) return x end, range(10), 1)
    pcall(pool.apply, pool, function() os.exit(3) end)
    pcall(pool.apply, pool, function() error("traced failure") end)
    pool:close()
    pool:join()
    local events = cjson.decode(support.slurp(path))
    os.remove(path)
    local tasks, marks, messages = 0, {}, {}
    for _, e in ipairs(events) do
      if e.ph == "X" then
        tasks = tasks + 1
        assert.truthy(e.name:find("control_spec.lua:", 1, true), e.name)
        assert.is_true(e.dur >= 0)
        assert.is_number(e.tid)
        assert.is_number(e.args.items)
        if e.args.error then messages[#messages + 1] = e.args.message end
      elseif e.ph == "i" then marks[#marks + 1] = e.name end
    end
    assert.are.equal(12, tasks)      -- 10 items, chunksize 1; and the two applies
    table.sort(marks)
    assert.are.same({ "worker lost", "worker started" }, marks)
    -- failed slices say why: the lost worker's exit, the task's error
    assert.are.equal(2, #messages)
    table.sort(messages)
    assert.truthy(messages[1]:find("exited with code 3", 1, true), messages[1])
    assert.truthy(messages[2]:find("traced failure", 1, true), messages[2])
  end)

  it("starts with pool:trace(path) and refuses a path it cannot write", function()
    local pool <close> = mp.Pool(1)
    local path = support.tmpname() .. ".json"
    pool:trace(path)
    pool:apply(function() return 1 end)
    pool:terminate()
    local events = cjson.decode(support.slurp(path))
    os.remove(path)
    assert.are.equal(1, #events)
    assert_error_with("lmp: /nonexistent/dir/t.json", pool.trace, mp.Pool(1), "/nonexistent/dir/t.json")
  end)

  it("ends with pool:trace(false): later tasks are not traced", function()
    local pool <close> = mp.Pool(1)
    local path = support.tmpname() .. ".json"
    pool:trace(path)
    pool:apply(function() return 1 end)
    pool:trace(false)
    pool:apply(function() return 2 end)
    local events = cjson.decode(support.slurp(path))
    os.remove(path)
    assert.are.equal(1, #events)
    assert_error_with("lmp: trace must be a file name, or false to stop, got number", pool.trace, pool, 42)
  end)
end)

describe("Process <close>", function()
  it("terminates the child if it still runs, and joins it, at scope exit", function()
    local pid
    do
      local p <close> = mp.Process(function() mp.sleep(30) end):start()
      pid = p.pid
    end
    assert.is_true(gone(pid))
  end)

  it("lets a finished child keep its result", function()
    local p
    do
      local q <close> = mp.Process(function() return 42 end):start()
      q:join()
      p = q
    end
    assert.are.equal(42, p:get())
  end)
end)

describe("options tables and mistyped calls", function()
  local pool
  setup(function() pool = mp.Pool(2) end)
  teardown(function() pool:terminate() end)

  it("accept the optional part of every call as a table; positional forms still work", function()
    assert.are.same({ 2, 4 }, pool:map(function(x) return 2 * x end, { 1, 2 }, { chunksize = 1 }))
    assert.are.same({ 2, 4 }, pool:map(function(x) return 2 * x end, { 1, 2 }, 1))
    local got
    local r = pool:map_async(function(x) return x end, { 1 }, { callback = function(v) got = v end })
    r:wait()
    assert.are.same({ 1 }, got)
    local e
    local r2 = pool:apply_async(function() error("x") end, nil, { error_callback = function(err) e = err end })
    r2:wait()
    assert.truthy(tostring(e):find("x", 1, true))
    assert.are.same({ 3 }, pool:starmap(function(a, b) return a + b end, { { 1, 2 } }, { chunksize = 2 }))
  end)

  it("name an unknown option, and the near one", function()
    assert_error_with("lmp: unknown option 'chunksze' for map (did you mean 'chunksize'?)", pool.map, pool, print, { 1 }, { chunksze = 2 })
    assert_error_with("lmp: unknown option 'process' for Pool (did you mean 'processes'?)", mp.Pool, { process = 2 })
    assert_error_with("lmp: unknown option 'zzz' for apply_async", pool.apply_async, pool, print, nil, { zzz = 1 })
    assert_error_with("lmp: map_async takes its callbacks in the options table, not after it",
      pool.map_async, pool, print, { 1 }, { chunksize = 1 }, print)
  end)

  it("take integral floats where integers are expected", function()
    local p <close> = mp.Pool(2.0)
    assert.truthy(tostring(p):find("2 workers", 1, true))
    local q <close> = mp.Pool(mp.cpu_count() / mp.cpu_count())
    assert.truthy(tostring(q):find("1 workers", 1, true))
    assert.are.same({ 1, 2 }, pool:map(function(x) return x end, { 1, 2 }, 2.0))
    assert_error_with("lmp: chunksize must be an integer, got 1.5", pool.map, pool, print, { 1 }, 1.5)
    assert_error_with("lmp: Pool processes must be an integer, got 2.5", mp.Pool, 2.5)
  end)

  it("say what went wrong when pairs(t) is given as the iterable", function()
    local t = { a = 1, b = 2 }
    assert_error_with("lmp: map got a generic-for triple (pairs(t) or ipairs(t))", pool.map, pool, print, pairs(t))
    assert_error_with("lmp: imap got a generic-for triple", pool.imap, pool, print, ipairs({ 1 }))
  end)

  it("check Process options too", function()
    assert_error_with("lmp: unknown option 'targte' for Process (did you mean 'target'?)", mp.Process, { targte = print })
  end)
end)
