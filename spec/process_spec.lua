-- Process-level functions and mp.Process (API.md "Process-level functions",
-- "Process"; issue 3). Raw fork scenarios and anything that could leave a
-- forked copy of busted running are run in a fresh lua5.4 interpreter.
package.cpath = "./?.so;" .. package.cpath

local mp = require "lmp"
local support = require "spec.support"

---------------------------------------------------------------------------
-- helpers (the shared ones are in spec/support.lua)
---------------------------------------------------------------------------
local ROOT, q, slurp, tmpname = support.ROOT, support.q, support.slurp, support.tmpname
local run_lua, fields, dead, wait_until = support.run_lua, support.fields, support.dead, support.wait_until
local open_fds, errmsg = support.open_fds, support.errmsg

local function read_pid(path, seconds)
  local pid
  wait_until(function()
    pid = tonumber(slurp(path) or "")
    return pid ~= nil
  end, seconds or 10)
  return pid
end

local function kill_pidfile(path)
  local pid = tonumber(slurp(path) or "")
  if pid and not dead(pid) then mp.kill(pid, "KILL") end
  os.remove(path)
end

-- `local track <close> = reaper()`: every Process passed to track(p) is
-- killed (if still running) and joined when the test ends, pass or fail.
local function reaper()
  return setmetatable({}, {
    __call = function(self, p) self[#self + 1] = p; return p end,
    __close = function(self)
      for _, p in ipairs(self) do
        if p.pid then
          pcall(function()
            if p:is_alive() then p:kill() end
          end)
          pcall(p.join, p, 10)
        end
      end
    end,
  })
end

local function sleeper(seconds)
  return function() mp.sleep(seconds or 30) end
end

-- the message of an lmp: error raised by f(...)
local function assert_lmp_error(f, ...)
  return support.assert_error_with("lmp:", f, ...)
end

---------------------------------------------------------------------------
describe("mp.fork", function()
  it("returns the child's pid in the parent and 0 in the child", function()
    local out = run_lua [[
      local parent = mp.getpid()
      local pid = assert(mp.fork())
      if pid == 0 then
        print("child_pid=" .. mp.getpid())
        print("child_ppid=" .. mp.getppid())
        os.exit(0)
      end
      local w, how, code = mp.wait(pid)
      print("parent=" .. parent)
      print("forked=" .. pid)
      print("waited=" .. tostring(w) .. " " .. tostring(how) .. " " .. tostring(code))
    ]]
    local f = fields(out)
    assert.truthy(f.forked, out)
    assert.are.equal(f.forked, f.child_pid, out)
    assert.are.equal(f.parent, f.child_ppid, out)
    assert.are.equal(f.forked .. " exited 0", f.waited, out)
  end)

  it("flushes stdio first, so buffered output is printed once", function()
    local out = run_lua [[
      io.write("once")
      io.stderr:write("")
      local pid = assert(mp.fork())
      if pid == 0 then os.exit(0) end
      mp.wait(pid)
      io.write("|end\n")
    ]]
    assert.are.equal("once|end\n", out)
  end)

  it("reseeds math.random in the child", function()
    local out = run_lua [[
      for i = 1, 2 do
        local pid = assert(mp.fork())
        if pid == 0 then
          io.write("child" .. i .. "=" .. math.random(0) .. "\n")
          os.exit(0)
        end
        mp.wait(pid)
      end
      io.write("parent=" .. math.random(0) .. "\n")
    ]]
    local f = fields(out)
    assert.truthy(f.child1 and f.child2 and f.parent, out)
    assert.are_not.equal(f.child1, f.child2)
    assert.are_not.equal(f.parent, f.child1)
  end)
end)

describe("mp.getpid", function()
  it("returns this process's pid as an integer", function()
    local pid = mp.getpid()
    assert.are.equal("integer", math.type(pid))
    local stat = assert(slurp("/proc/self/stat"))
    assert.are.equal(tonumber(stat:match("^(%d+)")), pid)
  end)
end)

describe("mp.getppid", function()
  it("returns the parent's pid as an integer", function()
    local ppid = mp.getppid()
    assert.are.equal("integer", math.type(ppid))
    local stat = assert(slurp("/proc/self/stat"))
    assert.are.equal(tonumber(stat:match("^%d+ %b() %a (%d+)")), ppid)
  end)
end)

describe("mp.wait", function()
  it("returns pid, \"exited\" and the exit status", function()
    local out = run_lua [[
      local pid = assert(mp.fork())
      if pid == 0 then os.exit(7) end
      local w, how, code = mp.wait(pid)
      print("r=" .. tostring(w == pid) .. " " .. tostring(how) .. " " .. tostring(code))
      print("ctype=" .. math.type(code))
    ]]
    local f = fields(out)
    assert.are.equal("true exited 7", f.r, out)
    assert.are.equal("integer", f.ctype, out)
  end)

  it("returns pid, \"signaled\" and the signal number", function()
    local out = run_lua [[
      local pid = assert(mp.fork())
      if pid == 0 then mp.sleep(30) os.exit(0) end
      assert(mp.kill(pid, "KILL"))
      local w, how, code = mp.wait(pid)
      print("r=" .. tostring(w == pid) .. " " .. tostring(how) .. " " .. tostring(code))
    ]]
    assert.are.equal("true signaled 9", fields(out).r, out)
  end)

  it("returns 0 with nohang while the child is running", function()
    local out = run_lua [[
      local pid = assert(mp.fork())
      if pid == 0 then mp.sleep(30) os.exit(0) end
      print("nohang=" .. tostring(mp.wait(pid, true)))
      mp.kill(pid, "TERM")
      local w, how, code = mp.wait(pid)
      print("r=" .. tostring(w == pid) .. " " .. tostring(how) .. " " .. tostring(code))
    ]]
    local f = fields(out)
    assert.are.equal("0", f.nohang, out)
    assert.are.equal("true signaled 15", f.r, out)
  end)

  it("waits for any child without arguments", function()
    local out = run_lua [[
      local pid = assert(mp.fork())
      if pid == 0 then os.exit(3) end
      local w, how, code = mp.wait()
      print("r=" .. tostring(w == pid) .. " " .. tostring(how) .. " " .. tostring(code))
    ]]
    assert.are.equal("true exited 3", fields(out).r, out)
  end)

  it("returns nil, a message and an errno when there is no such child", function()
    local r = table.pack(mp.wait(1))
    assert.is_nil(r[1])
    assert.are.equal("string", type(r[2]))
    assert.are.equal(10, r[3])                      -- ECHILD
  end)
end)

describe("mp.kill", function()
  it("sends signals given by name or number, TERM by default", function()
    local track <close> = reaper()
    local cases = { { "KILL", -9 }, { "TERM", -15 }, { "HUP", -1 }, { "USR1", -10 },
                    { 9, -9 }, { 15, -15 }, { nil, -15 } }
    for _, c in ipairs(cases) do
      local p = track(mp.Process(sleeper())):start()
      local r = table.pack(mp.kill(p.pid, c[1]))
      assert.are.equal(true, r[1], tostring(r[2]))
      assert.is_true(p:join(10))
      assert.are.equal(c[2], p.exitcode, "signal " .. tostring(c[1]))
    end
  end)

  it("checks that a process exists with signal 0", function()
    local track <close> = reaper()
    local p = track(mp.Process(sleeper())):start()
    assert.are.equal(true, mp.kill(p.pid, 0))
    assert.is_true(p:is_alive())
  end)

  it("refuses an unknown signal name without sending anything", function()
    local track <close> = reaper()
    local p = track(mp.Process(sleeper())):start()
    for _, bad in ipairs({ "NOPE", "", "SIGNOPE", -1, 100000 }) do
      local ok, r1, r2 = pcall(mp.kill, p.pid, bad)
      assert(not ok or (r1 == nil and type(r2) == "string"),
        "mp.kill accepted signal " .. tostring(bad))
    end
    assert.is_true(p:is_alive())
  end)

  it("returns nil, a message and an errno for a pid that does not exist", function()
    local r = table.pack(mp.kill(0x7ffffff0, "TERM"))
    assert.is_nil(r[1])
    assert.are.equal("string", type(r[2]))
    assert.are.equal(3, r[3])                       -- ESRCH
  end)

  it("raises on a pid that is not a number", function()
    for _, bad in ipairs({ "x", {}, true }) do
      assert.is_false((pcall(mp.kill, bad)))
    end
    assert.is_false((pcall(mp.kill)))
  end)
end)

describe("mp.cpu_count", function()
  it("returns the number of CPUs this process may run on, at least 1", function()
    local n = mp.cpu_count()
    assert.are.equal("integer", math.type(n))
    assert.is_true(n >= 1)
    local p = io.popen("nproc 2>/dev/null")
    local nproc = p and tonumber(p:read("a"))
    if p then p:close() end
    if nproc then assert.are.equal(nproc, n) end
  end)

  it("honours the CPU affinity mask", function()
    if not os.execute("command -v taskset >/dev/null 2>&1") then
      pending("taskset is not installed")
      return
    end
    local script, out = os.tmpname(), os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(("package.cpath = %q .. package.cpath\n"):format(ROOT .. "/?.so;"))
    f:write('print("n=" .. require("lmp").cpu_count())\n')
    f:close()
    os.execute(("taskset -c 0 lua5.4 %s >%s 2>&1"):format(q(script), q(out)))
    local text = slurp(out) or ""
    os.remove(script)
    os.remove(out)
    assert.are.equal("1", fields(text).n, text)
  end)
end)

describe("mp.sleep", function()
  it("sleeps for at least the given float number of seconds", function()
    local t0 = mp.time()
    mp.sleep(0.05)
    assert.is_true(mp.time() - t0 >= 0.05)
    mp.sleep(0)
  end)

  it("keeps sleeping when a child exits meanwhile", function()
    local track <close> = reaper()
    track(mp.Process(function() end)):start()
    local t0 = mp.time()
    mp.sleep(0.3)
    assert.is_true(mp.time() - t0 >= 0.3)
  end)

  it("raises on an argument that is not a number", function()
    for _, bad in ipairs({ "x", {}, true }) do
      assert.is_false((pcall(mp.sleep, bad)))
    end
    assert.is_false((pcall(mp.sleep)))
  end)
end)

describe("mp.time", function()
  it("returns wall-clock seconds as a float", function()
    local t = mp.time()
    assert.are.equal("float", math.type(t))
    assert.is_true(math.abs(t - os.time()) < 2)
  end)

  it("increases, with at least microsecond resolution", function()
    local t1 = mp.time()
    mp.sleep(0.01)
    assert.is_true(mp.time() > t1)
    local smallest, prev = math.huge, mp.time()
    for _ = 1, 100000 do
      local now = mp.time()
      if now > prev then smallest = math.min(smallest, now - prev) end
      prev = now
      if smallest < 1e-5 then break end
    end
    assert.is_true(smallest <= 1e-3, "smallest step " .. smallest)
  end)
end)

describe("mp.current_process", function()
  it("is the MainProcess in the main process", function()
    local cp = mp.current_process()
    assert.are.equal("MainProcess", cp.name)
    assert.are.equal(mp.getpid(), cp.pid)
  end)

  it("is the Process's name and pid inside a child", function()
    local track <close> = reaper()
    local function me()
      local cp = mp.current_process()
      return cp.name, cp.pid
    end
    local p = track(mp.Process { target = me, name = "w1" }):start()
    local name, pid = p:get(30)
    assert.are.equal("w1", name)
    assert.are.equal(p.pid, pid)
    local d = track(mp.Process(me)):start()
    assert.are.equal(d.name, (d:get(30)))
  end)
end)

describe("mp.active_children", function()
  it("lists this process's running Process objects", function()
    local track <close> = reaper()
    local p = track(mp.Process(sleeper())):start()
    local found = false
    for _, c in ipairs(mp.active_children()) do
      if rawequal(c, p) then found = true end
    end
    assert.is_true(found)
    p:kill()
    assert.is_true(p:join(10))
    for _, c in ipairs(mp.active_children()) do
      assert.is_false(rawequal(c, p))
    end
  end)

  it("is empty inside a child even when the parent has children", function()
    local track <close> = reaper()
    track(mp.Process(sleeper())):start()
    local p = track(mp.Process(function() return #mp.active_children() end)):start()
    assert.are.equal(0, p:get(30))
  end)
end)

---------------------------------------------------------------------------
describe("mp.Process", function()
  it("takes a target and its arguments, nils and count kept", function()
    local track <close> = reaper()
    local p = track(mp.Process(function(...) return select("#", ...), ... end, 1, nil, "x", nil))
    p:start()
    local r = table.pack(p:get(30))
    assert.are.equal(5, r.n)
    assert.are.equal(4, r[1])
    assert.are.equal(1, r[2])
    assert.is_nil(r[3])
    assert.are.equal("x", r[4])
    assert.is_nil(r[5])
  end)

  it("takes a table with target, args, name and daemon", function()
    local track <close> = reaper()
    local p = track(mp.Process { target = function(a, b) return a + b end, args = { 2, 3 },
                                 name = "adder", daemon = true })
    assert.are.equal("adder", p.name)
    assert.are.equal(true, p.daemon)
    p:start()
    assert.are.equal(5, p:get(30))
  end)

  it("honours args.n so nils in args survive", function()
    local track <close> = reaper()
    local p = track(mp.Process { target = function(...) return select("#", ...) end,
                                 args = table.pack(1, nil, nil) }):start()
    assert.are.equal(3, p:get(30))
  end)

  it("accepts a callable table as target", function()
    local track <close> = reaper()
    local callable = setmetatable({}, { __call = function(_, x) return x * 2 end })
    local p = track(mp.Process { target = callable, args = { 21 } }):start()
    assert.are.equal(42, p:get(30))
  end)

  it("names processes Process-N by default, with a new N each time", function()
    local a, b = mp.Process(print), mp.Process(print)
    assert.truthy(a.name:match("^Process%-%d+$"), a.name)
    assert.truthy(b.name:match("^Process%-%d+$"), b.name)
    assert.are_not.equal(a.name, b.name)
    assert.are.equal(false, a.daemon)
  end)

  it("has no pid and no exitcode before start", function()
    local p = mp.Process(print)
    assert.is_nil(p.pid)
    assert.is_nil(p.exitcode)
  end)

  it("raises lmp: on bad arguments", function()
    local f = function() end
    local bad = {
      function() return mp.Process() end,
      function() return mp.Process(1) end,
      function() return mp.Process("print") end,
      function() return mp.Process(true) end,
      function() return mp.Process {} end,
      function() return mp.Process { target = 1 } end,
      function() return mp.Process { target = "print" } end,
      function() return mp.Process { target = f, args = 1 } end,
    }
    for i, make in ipairs(bad) do
      local ok, err = pcall(make)
      assert(not ok, "bad call #" .. i .. " did not raise")
      assert(type(err) == "string" and err:find("lmp:", 1, true), "bad call #" .. i .. ": " .. tostring(err))
    end
  end)

  it("runs 100 children at once and gets every result", function()
    local track <close> = reaper()
    local ps = {}
    for i = 1, 100 do
      ps[i] = track(mp.Process(function(n) return n * n, mp.getpid() end, i)):start()
    end
    local pids = {}
    for i, p in ipairs(ps) do
      local sq, pid = p:get(60)
      assert.are.equal(i * i, sq)
      assert.are.equal(p.pid, pid)
      pids[pid] = true
    end
    for _, p in ipairs(ps) do
      assert.is_true(p:join(30))
      assert.are.equal(0, p.exitcode)
    end
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.are.equal(100, n)
  end)

  it("gives every child different random numbers", function()
    local track <close> = reaper()
    local draw = function() return math.random(0) end
    local a = track(mp.Process(draw)):start()
    local b = track(mp.Process(draw)):start()
    local ra, rb = a:get(30), b:get(30)
    assert.are_not.equal(ra, rb)
    assert.are_not.equal(math.random(0), ra)
  end)

  it("lets a child start its own Process", function()
    local track <close> = reaper()
    local p = track(mp.Process(function()
      local inner = mp.Process(function() return "inner", mp.getppid() end):start()
      local what, ppid = inner:get(30)
      inner:join()
      return what, ppid, mp.getpid(), inner.exitcode
    end)):start()
    local what, ppid, pid, code = p:get(30)
    assert.are.equal("inner", what)
    assert.are.equal(pid, ppid)
    assert.are.equal(p.pid, pid)
    assert.are.equal(0, code)
  end)

  it("does not touch the parent's processes when a child closes its Lua state", function()
    local track <close> = reaper()
    local other = track(mp.Process(sleeper())):start()
    local daemon = track(mp.Process { target = sleeper(), daemon = true }):start()
    local p = track(mp.Process(function() os.exit(5, true) end)):start()
    assert.is_true(p:join(30))
    assert.are.equal(5, p.exitcode)
    assert.is_true(other:is_alive())
    assert.is_true(daemon:is_alive())
  end)

  it("leaves no open file descriptors behind", function()
    local function cycle()
      local p = mp.Process(function(x) return x end, "v"):start()
      assert.are.equal("v", p:get(30))
      assert.is_true(p:join(30))
    end
    cycle()
    collectgarbage()
    local before = open_fds()
    for _ = 1, 50 do cycle() end
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, open_fds())
  end)

  it("kills daemon children when the parent is killed with SIGKILL", function()
    local pidfile = tmpname()
    finally(function() kill_pidfile(pidfile) end)
    local out = run_lua(([[
      local pidfile = %q
      local p = mp.Process { daemon = true, target = function()
        local f = assert(io.open(pidfile .. ".tmp", "w"))
        f:write(mp.getpid())
        f:close()
        os.rename(pidfile .. ".tmp", pidfile)
        mp.sleep(30)
      end }
      p:start()
      for _ = 1, 1000 do
        local f = io.open(pidfile)
        if f then f:close() break end
        mp.sleep(0.01)
      end
      io.write("started\n")
      io.flush()
      mp.kill(mp.getpid(), "KILL")
      io.write("survived\n")
    ]]):format(pidfile), 20)
    assert.truthy(out:find("started", 1, true), out)
    assert.falsy(out:find("survived", 1, true), out)
    local pid = read_pid(pidfile)
    assert.truthy(pid, "the daemon never wrote its pid")
    assert.is_true(wait_until(function() return dead(pid) end, 10), "daemon " .. pid .. " still running")
  end)

  it("terminates daemon children when the main script ends", function()
    local pidfile = tmpname()
    finally(function() kill_pidfile(pidfile) end)
    local out = run_lua(([[
      local pidfile = %q
      local p = mp.Process { daemon = true, target = function()
        local f = assert(io.open(pidfile .. ".tmp", "w"))
        f:write(mp.getpid())
        f:close()
        os.rename(pidfile .. ".tmp", pidfile)
        mp.sleep(30)
      end }
      p:start()
      for _ = 1, 1000 do
        local f = io.open(pidfile)
        if f then f:close() break end
        mp.sleep(0.01)
      end
      io.write("end\n")
    ]]):format(pidfile), 20)
    assert.truthy(out:find("end", 1, true), out)
    local pid = read_pid(pidfile)
    assert.truthy(pid, "the daemon never wrote its pid")
    assert.is_true(wait_until(function() return dead(pid) end, 10), "daemon " .. pid .. " still running")
  end)

  it("joins non-daemon children when the main script ends", function()
    local file = tmpname()
    finally(function() os.remove(file) end)
    local out, status = run_lua(([[
      local file = %q
      mp.Process(function()
        mp.sleep(0.3)
        local f = assert(io.open(file, "a"))
        f:write("child was here\n")
        f:close()
      end):start()
      io.write("script ends\n")
    ]]):format(file), 20)
    assert.are.equal(0, status, out)
    assert.truthy(out:find("script ends", 1, true), out)
    assert.are.equal("child was here\n", slurp(file))
  end)

  it("turns SIGINT during join into an error the script can catch", function()
    local pidfile = tmpname()
    finally(function() kill_pidfile(pidfile) end)
    local out, status = run_lua(([[
      local pidfile = %q
      local p = mp.Process(function() mp.sleep(30) end):start()
      local f = assert(io.open(pidfile, "w"))
      f:write(p.pid)
      f:close()
      local parent = mp.getpid()
      local helper = assert(mp.fork())
      if helper == 0 then
        mp.sleep(0.3)
        mp.kill(parent, "INT")
        os.exit(0)
      end
      local ok, err = pcall(p.join, p)
      print("ok=" .. tostring(ok))
      print("err=" .. tostring(err):gsub("\n", " "))
      p:kill()
      p:join()
      mp.wait(helper)
      print("exitcode=" .. tostring(p.exitcode))
      print("done=yes")
    ]]):format(pidfile), 20)
    local f = fields(out)
    assert.are.equal("false", f.ok, out)
    assert.truthy(f.err and f.err ~= "nil", out)
    assert.are.equal("yes", f.done, out)
    assert.are.equal(0, status, out)
    assert.are.equal("-9", f.exitcode, out)
  end)
end)

describe("Process:start", function()
  it("returns the process and sets its pid", function()
    local track <close> = reaper()
    local p = track(mp.Process(function() end))
    assert.is_true(rawequal(p, p:start()))
    assert.are.equal("integer", math.type(p.pid))
    assert.are_not.equal(mp.getpid(), p.pid)
  end)

  it("raises when the process was already started", function()
    local track <close> = reaper()
    local p = track(mp.Process(function() end)):start()
    assert_lmp_error(p.start, p)
    p:join(30)
    assert_lmp_error(p.start, p)
  end)

  it("names the process in the error when it runs out of fds (ulimit -n)", function()
    local script = tmpname()
    local f = assert(io.open(script, "w"))
    f:write(("package.cpath = %q .. package.cpath\n"):format(ROOT .. "/?.so;"), [[
local mp = require "lmp"
local held = {}
for i = 1, 64 do held[i] = io.open("/dev/null") if not held[i] then break end end
local p = mp.Process { target = function() end, name = "w1" }
local ok, err = pcall(p.start, p)
print("ok=" .. tostring(ok))
print("err=" .. tostring(err))
local d = mp.Process(function() end)
ok, err = pcall(d.start, d)
print("derr=" .. tostring(err))
print("dname=" .. d.name)
]])
    f:close()
    local out = support.run_sh("prlimit --nofile=32 lua5.4 " .. q(script), 30)
    os.remove(script)
    local r = fields(out)
    assert.are.equal("false", r.ok, out)
    assert.are.equal("lmp: w1: pipe: Too many open files", r.err, out)
    assert.are.equal("lmp: " .. r.dname .. ": pipe: Too many open files", r.derr, out)
  end)
end)

describe("Process:join", function()
  it("returns true when the child has ended, also when called again", function()
    local track <close> = reaper()
    local p = track(mp.Process(function() end)):start()
    assert.are.equal(true, p:join())
    assert.are.equal(true, p:join())
    assert.are.equal(true, p:join(0))
    assert.are.equal(0, p.exitcode)
  end)

  it("returns false on timeout, and true once the child is done", function()
    local track <close> = reaper()
    local p = track(mp.Process(sleeper())):start()
    assert.are.equal(false, p:join(0.05))
    assert.are.equal(false, p:join(0))
    assert.is_nil(p.exitcode)
    p:terminate()
    assert.are.equal(true, p:join(10))
  end)

  it("reaps the child, so no zombie is left", function()
    local track <close> = reaper()
    local p = track(mp.Process(function() end)):start()
    assert.is_true(p:join(30))
    local r = table.pack(mp.wait(p.pid, true))
    assert.is_nil(r[1])
    assert.are.equal(10, r[3])                      -- ECHILD: already reaped
    assert.is_true(dead(p.pid))
  end)

  it("completes with a timeout while the child writes a 64 MiB result", function()
    local track <close> = reaper()
    local size = 64 * 1024 * 1024
    local p = track(mp.Process(function() return string.rep("x", size) end)):start()
    local done = false
    for _ = 1, 600 do
      if p:join(0.1) then done = true break end
    end
    assert.is_true(done)
    assert.are.equal(0, p.exitcode)
    local s = p:get(30)
    assert.are.equal(size, #s)
  end)

  it("raises lmp: on a negative timeout or before start", function()
    local track <close> = reaper()
    assert_lmp_error(function() return mp.Process(print):join() end)
    local p = track(mp.Process(sleeper())):start()
    assert_lmp_error(p.join, p, -1)
    assert.is_false(pcall(p.join, p, "soon"))
  end)
end)

describe("Process:get", function()
  it("returns the target's values with nils and count kept", function()
    local track <close> = reaper()
    local p = track(mp.Process(function() return nil, 2, nil end)):start()
    local r = table.pack(p:get(30))
    assert.are.equal(3, r.n)
    assert.is_nil(r[1]); assert.are.equal(2, r[2]); assert.is_nil(r[3])
    local none = track(mp.Process(function() end)):start()
    assert.are.equal(0, select("#", none:get(30)))
  end)

  it("returns tables with shared references and functions with upvalues", function()
    local track <close> = reaper()
    local p = track(mp.Process(function()
      local k = 21
      local t = { list = { 1, 2, 3 } }
      t.self, t.alias = t, t.list
      return t, function() return k * 2 end
    end)):start()
    local t, f = p:get(30)
    assert.is_true(rawequal(t, t.self))
    assert.is_true(rawequal(t.list, t.alias))
    assert.are.same({ 1, 2, 3 }, t.list)
    assert.are.equal(42, f())
  end)

  it("returns a 64 MiB result without deadlock", function()
    local track <close> = reaper()
    local size = 64 * 1024 * 1024
    local p = track(mp.Process(function() return string.rep("y", size), "tail" end)):start()
    local s, tail = p:get(60)
    assert.are.equal(size, #s)
    assert.are.equal("tail", tail)
    assert.is_true(p:join(30))
  end)

  it("returns results on either side of the pipe's sizes (64 KiB, 1 MiB) intact", function()
    local track <close> = reaper()
    for _, size in ipairs({ 65535, 65537, 2 ^ 20 - 64, 2 ^ 20 + 64, 3 * 2 ^ 20 }) do
      size = math.tointeger(size)
      local p = track(mp.Process(function() return ("z"):rep(size - 1) .. "!" end)):start()
      local s = p:get(30)
      assert.are.equal(size, #s)
      assert.are.equal("!", s:sub(-1))
    end
  end)

  it("re-raises a string error with the child's traceback appended", function()
    local track <close> = reaper()
    local p = track(mp.Process(function() error("boom in child") end)):start()
    local err = errmsg(p.get, p, 30)
    assert.are.equal("string", type(err))
    assert.truthy(err:find("boom in child", 1, true), err)
    assert.truthy(err:find("stack traceback", 1, true), err)
    assert.truthy(err:find("process_spec.lua", 1, true), err)
    assert.is_true(p:join(30))
    assert.are.equal(1, p.exitcode)
  end)

  it("re-raises a table error as an equal table, and other values as themselves", function()
    local track <close> = reaper()
    local p = track(mp.Process(function() error({ code = 42, why = { "nested" } }) end)):start()
    local err = errmsg(p.get, p, 30)
    assert.are.same({ code = 42, why = { "nested" } }, err)
    local n = track(mp.Process(function() error(17) end)):start()
    assert.are.equal(17, errmsg(n.get, n, 30))
  end)

  it("raises lmp: timeout on timeout", function()
    local track <close> = reaper()
    local p = track(mp.Process(sleeper())):start()
    local err = assert_lmp_error(p.get, p, 0.05)
    assert.truthy(err:find("lmp: timeout", 1, true), err)
  end)

  it("raises lmp: on a negative timeout or before start", function()
    local track <close> = reaper()
    local p = mp.Process(function() return 1 end)
    assert_lmp_error(p.get, p)
    track(p):start()
    assert_lmp_error(p.get, p, -1)
    assert.are.equal(1, p:get(30))
  end)

  it("raises lmp: when the child died without a result", function()
    local track <close> = reaper()
    local k = track(mp.Process(sleeper())):start()
    k:kill()
    assert_lmp_error(k.get, k, 30)
    local e = track(mp.Process(function() os.exit(3) end)):start()
    assert_lmp_error(e.get, e, 30)
  end)

  it("raises naming result[i] when a result cannot be serialized", function()
    local track <close> = reaper()
    local p = track(mp.Process(function() return 1, { 2, 3, coroutine.create(print) } end)):start()
    local err = errmsg(p.get, p, 30)
    assert.truthy(tostring(err):find("cannot serialize thread at result[2][3]", 1, true), tostring(err))
  end)
end)

describe("Process:is_alive", function()
  it("is false before start, true while running and false after the end", function()
    local track <close> = reaper()
    local p = track(mp.Process(sleeper()))
    assert.are.equal(false, p:is_alive())
    p:start()
    assert.are.equal(true, p:is_alive())
    p:kill()
    assert.is_true(wait_until(function() return not p:is_alive() end, 10))
    p:join(10)
    assert.are.equal(false, p:is_alive())
  end)
end)

describe("Process:terminate", function()
  it("sends SIGTERM, giving exitcode -15", function()
    local track <close> = reaper()
    local p = track(mp.Process(sleeper())):start()
    p:terminate()
    assert.is_true(p:join(10))
    assert.are.equal(-15, p.exitcode)
  end)
end)

describe("Process:kill", function()
  it("sends SIGKILL, giving exitcode -9", function()
    local track <close> = reaper()
    local p = track(mp.Process(sleeper())):start()
    p:kill()
    assert.is_true(p:join(10))
    assert.are.equal(-9, p.exitcode)
  end)
end)

describe("Process.exitcode", function()
  it("is nil while running, 0 on success, 1 on error and n for os.exit(n)", function()
    local track <close> = reaper()
    local cases = {
      { function() end, 0 },
      { function() return 1, 2 end, 0 },
      { function() error("x") end, 1 },
      { function() error({}) end, 1 },
      { function() os.exit(3) end, 3 },
      { function() os.exit(0) end, 0 },
      { function() os.exit(true) end, 0 },
      { function() os.exit(false) end, 1 },
      { function() os.exit(200, true) end, 200 },
    }
    local running = track(mp.Process(sleeper())):start()
    assert.is_nil(running.exitcode)
    for i, c in ipairs(cases) do
      local p = track(mp.Process(c[1])):start()
      assert.is_true(p:join(30))
      assert.are.equal(c[2], p.exitcode, "case " .. i)
    end
  end)
end)

describe("mp.Process (review regressions)", function()
  it("turns an args table whose __index raises into the child's error, also from a coroutine", function()
    local out = run_lua([[
      local bad = setmetatable({}, { __index = function() error("args boom") end })
      local function try()
        local p = mp.Process{ target = function(...) return select("#", ...) end, args = bad }
        p:start()
        local ok, e = pcall(p.get, p)
        return ok, tostring(e):match("[^\n]*"), p.exitcode
      end
      print("main=" .. table.concat({ tostring((try())) }, ""))
      local ok, e, code = coroutine.wrap(try)()
      print("co_ok=" .. tostring(ok) .. " co_code=" .. tostring(code))
      print("co_err=" .. e)
      print("pid=" .. mp.getpid())
    ]])
    local n = 0
    for _ in out:gmatch("pid=") do n = n + 1 end
    assert.are.equal(1, n, out)                      -- no child ran the script
    local f = fields(out)
    assert.are.equal("false", f.main, out)
    assert.truthy(f.co_err and f.co_err:find("args boom", 1, true), out)
  end)
end)

---------------------------------------------------------------------------
describe("mp.Process (second review)", function()
  it("takes the status mp.wait reaped for it: join returns at once with it", function()
    local track <close> = reaper()
    local p = track(mp.Process(function() os.exit(3) end)):start()
    local w, how, code = mp.wait(p.pid)
    assert.are.same({ p.pid, "exited", 3 }, { w, how, code })
    assert.is_true(p:join(0))
    assert.are.equal(3, p.exitcode)
    assert.is_false(p:is_alive())
  end)

  it("refuses a pid that does not fit pid_t instead of wrapping it to -1", function()
    local track <close> = reaper()
    local p = track(mp.Process(sleeper(30))):start()
    -- signal 0 only: were the check ever lost, 2^32 - 1 would become
    -- kill(-1, sig), every process of the user
    for _, pid in ipairs({ 2 ^ 32 - 1, (1 << 32) + p.pid, -(1 << 40), 1.5, "12" }) do
      assert_lmp_error(mp.kill, pid, 0)
      assert_lmp_error(mp.wait, pid, true)
    end
    assert.is_true(p:is_alive())           -- nothing was sent
  end)

  it("lets a child with a result bigger than the pipe exit while the script only polls", function()
    local track <close> = reaper()
    local p = track(mp.Process(function() return ("z"):rep(3 * 2 ^ 20) end)):start()
    assert.is_true(wait_until(function() return not p:is_alive() end, 20))
    assert.are.equal(0, p.exitcode)
    assert.are.equal(3 * 2 ^ 20, #p:get(5))
  end)

  it("gives back the fds and zombies of finished children nobody joined when the next starts", function()
    local track <close> = reaper()
    local before = open_fds()
    local started = {}
    for i = 1, 30 do started[i] = track(mp.Process(function() return i end)):start() end
    -- zombies by now, holding their pipes and pidfds: nothing polled them
    local pids = {}
    for i, p in ipairs(started) do pids[i] = p.pid end
    assert.is_true(wait_until(function()
      for _, pid in ipairs(pids) do if not dead(pid) then return false end end
      return true
    end, 20))
    local zombies = 0
    for _, pid in ipairs(pids) do if not support.gone(pid) then zombies = zombies + 1 end end
    assert.is_true(zombies > 0)            -- the last ones at least
    track(mp.Process(function() end)):start():join()
    assert.is_true(open_fds() <= before + 2, ("%d fds before, %d after"):format(before, open_fds()))
    for _, pid in ipairs(pids) do assert.is_true(support.gone(pid)) end
    for i, p in ipairs(started) do assert.are.equal(i, p:get(5)) end
  end)

  it("keeps the fds of unjoined finished children bounded while an mp.fork child is left unwaited", function()
    -- an ended child that is not a Process is the one waitid keeps naming;
    -- the finished Processes behind it must still be reaped regularly
    local track <close> = reaper()
    local z = assert(mp.fork())
    if z == 0 then os.exit(0) end
    assert.is_true(wait_until(function() return dead(z) end, 10))
    for _ = 1, 100 do track(mp.Process(sleeper(30))):start() end
    local base, worst = open_fds(), 0
    for _ = 1, 200 do
      mp.Process(function() end):start()
      local n = open_fds() - base
      if n > worst then worst = n end
    end
    mp.wait(z)
    -- at most 32 finished ones wait for the periodic scan (2 fds each),
    -- plus those still starting or ending; without the bound, up to the
    -- 100 running children's worth (over 200 fds)
    assert.is_true(worst < 150, "fds grew by " .. worst)
  end)

  it("ends a child as a script ends: its children joined, its daemons terminated", function()
    local done = tmpname()
    local track <close> = reaper()
    local p = track(mp.Process(function()
      mp.Process(function()
        mp.sleep(0.3)
        io.open(done, "w"):write("yes"):close()
      end):start()
      local d = mp.Process { target = sleeper(30), daemon = true }:start()
      return d.pid
    end)):start()
    local dpid = p:get(20)
    assert.is_true(p:join(20))
    assert.are.equal("yes", slurp(done))  -- the grandchild ran to its end first
    assert.is_true(wait_until(function() return dead(dpid) end, 10))
    os.remove(done)
  end)

  it("lets Ctrl-C through mp.wait(pid) while the child runs on", function()
    local out, status = run_lua([[
      local me = mp.getpid()
      local c = assert(mp.fork())
      if c == 0 then mp.sleep(5) os.exit(0) end
      local k = assert(mp.fork())
      if k == 0 then mp.sleep(0.2) mp.kill(me, "INT") os.exit(0) end
      local ok, err = pcall(mp.wait, c)
      print("ok=" .. tostring(ok))
      print("err=" .. tostring(err))
      print("childalive=" .. tostring(mp.wait(c, true) == 0))
      mp.kill(c, "KILL") mp.wait(c) mp.wait(k)
    ]], 20)
    local f = fields(out)
    assert.are.equal("false", f.ok, out)
    assert.truthy(f.err and f.err:find("interrupted", 1, true), out)
    assert.are.equal("true", f.childalive, out)
  end)

  it("raises lmp: errors for misuse of a Process object", function()
    local track <close> = reaper()
    local p = track(mp.Process(function() end)):start()
    assert.are.equal("lmp: negative timeout", errmsg(p.join, p, -1))
    assert.truthy(errmsg(p.join, p, "x"):find("^lmp: timeout must be a number"))
    assert.truthy(errmsg(p.join, 1):find("^lmp: expected a Process, got number"))
    assert.truthy(errmsg(mp.Process):find("^lmp: Process target must be callable, got nil"))
    assert.truthy(errmsg(function() p.name = {} end):find("^lmp: Process name must be a string"))
    assert.is_nil(p[true])
    p:join()
  end)
end)

---------------------------------------------------------------------------
-- Pid reuse, forced through /proc/sys/kernel/ns_last_pid (needs root): a
-- pid mp.wait reaped must never be waited for or signalled again, since the
-- kernel may give it to the next process.
describe("a pid mp.wait reaped, given to the next process", function()
  local can = io.open("/proc/sys/kernel/ns_last_pid", "w")
  if can then can:close() end
  local function reuse(code)
    if not can then
      pending("needs a writable /proc/sys/kernel/ns_last_pid (root)")
      return
    end
    local out, status = run_lua([[
      local function reuse_next(pid)
        local f = assert(io.open("/proc/sys/kernel/ns_last_pid", "w"))
        f:write(tostring(pid - 1)) f:close()
      end
      -- a Process given pid, ended; then a new pool sweeps lmp's zombie list
      local function process_on(pid)
        reuse_next(pid)
        local p = mp.Process(function() return 42 end):start()
        if p.pid ~= pid then print("reused=no") p:join() os.exit(0) end
        mp.sleep(0.2)
        local pool2 = mp.Pool(1)
        print("join=" .. tostring(p:join(5)))
        print("exitcode=" .. tostring(p.exitcode))
        print("result=" .. tostring(p:get(5)))
        pool2:terminate()
      end
    ]] .. code, 30)
    local f = fields(out)
    if f.reused == "no" then pending("the kernel did not reuse the pid") return end
    assert.are.equal(0, status, out)
    return f, out
  end

  it("is not signalled when the pool that had it as a worker terminates", function()
    local f, out = reuse([[
      local pool = mp.Pool(1)
      local wpid = pool:apply(mp.getpid)
      assert(mp.kill(wpid, "KILL"))
      assert(mp.wait(wpid) == wpid)
      reuse_next(wpid)
      local holder = assert(mp.fork())
      if holder == 0 then mp.sleep(1) os.exit(0) end
      if holder ~= wpid then print("reused=no") mp.kill(holder, "KILL") mp.wait(holder) os.exit(0) end
      pool:terminate()
      local _, how, code = mp.wait(holder)
      print("holder=" .. how .. " " .. code)
    ]])
    if f then assert.are.equal("exited 0", f.holder, out) end
  end)

  it("is not on lmp's list of killed workers once a collected pool reaped it", function()
    local f, out = reuse([[
      local pool = mp.Pool(1)
      local wpid = pool:apply(mp.getpid)
      pool = nil collectgarbage() collectgarbage()   -- killed and reaped
      assert(mp.wait() == nil)                       -- no child is left
      process_on(wpid)
    ]])
    if f then
      assert.are.equal("true", f.join, out)
      assert.are.equal("0", f.exitcode, out)
      assert.are.equal("42", f.result, out)
    end
  end)

  it("does not take a later Process's exit when a new pool reaps old zombies", function()
    local f, out = reuse([[
      local pool = mp.Pool(1)
      local wpid = pool:apply(mp.getpid)
      assert(mp.kill(wpid, "KILL"))
      assert(mp.wait(wpid) == wpid)
      pool = nil collectgarbage() collectgarbage()
      process_on(wpid)
    ]])
    if f then
      assert.are.equal("true", f.join, out)
      assert.are.equal("0", f.exitcode, out)
      assert.are.equal("42", f.result, out)
    end
  end)
end)

---------------------------------------------------------------------------
-- Interrupts reach every wait, and the end of a script never waits in
-- silence (issue 10).
---------------------------------------------------------------------------
describe("mp.Process (SIGINT to the child)", function()
  -- a target that spins, one that sleeps, one that sleeps in a coroutine
  local targets = {
    { "spins", function() while true do end end },
    { "sleeps", function() mp.sleep(30) end },
    { "sleeps in a coroutine", function() coroutine.wrap(function() mp.sleep(30) end)() end },
  }
  for _, t in ipairs(targets) do
    it("ends a child whose target " .. t[1] .. ", as lua5.4 ends on Ctrl-C", function()
      local track <close> = reaper()
      local p = track(mp.Process(t[2]):start())
      mp.sleep(0.2)
      mp.kill(p.pid, "INT")
      assert.is_true(p:join(10), "the child did not end")
      assert.equal(1, p.exitcode)
      support.assert_error_with("interrupted!", p.get, p)
    end)
  end

  it("ends a child started from a coroutine whose target sleeps in a coroutine (a test runner's case)", function()
    local track <close> = reaper()
    local p = coroutine.wrap(function()
      return track(mp.Process(targets[3][2]):start())
    end)()
    mp.sleep(0.2)
    mp.kill(p.pid, "INT")
    assert.is_true(p:join(10), "the child did not end")
    assert.equal(1, p.exitcode)
    support.assert_error_with("interrupted!", p.get, p)
  end)
end)

describe("mp.sleep (in a coroutine)", function()
  it("lets Ctrl-C stop the script, also when the coroutine's caller catches the error", function()
    local out, status, how = run_lua([[
      local parent = mp.getpid()
      local helper = assert(mp.fork())
      if helper == 0 then mp.sleep(0.3) mp.kill(parent, "INT") os.exit(0) end
      local ok, err = coroutine.resume(coroutine.create(function() mp.sleep(300) end))
      print("caught=" .. tostring(err))
      mp.wait(helper)
      for i = 1, 1e9 do end                  -- the main thread is stopped too
      print("survived=yes")
    ]], 30)
    assert.truthy(out:find("interrupted!", 1, true), out)
    assert.is_nil(out:find("survived=yes", 1, true), out)
    assert.equal(1, status, out)
  end)
end)

describe("the end of a script with children still running", function()
  it("says whom it waits for after a second, and Ctrl-C then stops them", function()
    local dir = tmpname()
    assert(os.execute("mkdir -p " .. q(dir)))
    local script = dir .. "/s.lua"
    local f = assert(io.open(script, "w"))
    f:write(("package.cpath = %q .. package.cpath\n"):format(ROOT .. "/?.so;"),
      'local mp = require "lmp"\n',
      ('local out = assert(io.open(%q, "w"))\n'):format(dir .. "/pids"),
      'local a = mp.Process{target = function() mp.sleep(30) end, name = "long-one"}:start()\n',
      'local b = mp.Process(function() mp.sleep(30) end):start()\n',
      'out:write(mp.getpid(), " ", a.pid, " ", b.pid, "\\n") out:close()\n')
    f:close()
    os.execute(("(timeout -s KILL 60 lua5.4 %s >%s 2>&1; echo $? >%s) &"):format(
      q(script), q(dir .. "/out"), q(dir .. "/status")))
    local pids
    assert.is_true(wait_until(function()
      local s = slurp(dir .. "/pids") or ""
      pids = { s:match("(%d+) (%d+) (%d+)") }
      return #pids == 3
    end, 10), "the script did not start")
    local ok = wait_until(function()
      return (slurp(dir .. "/out") or ""):find("lmp: waiting for 2 child processes", 1, true) ~= nil
    end, 10)
    local out = slurp(dir .. "/out") or ""
    mp.kill(tonumber(pids[1]), "INT")
    local ended = wait_until(function() return slurp(dir .. "/status") ~= nil end, 10)
    local status = slurp(dir .. "/status")
    for _, pid in ipairs({ pids[2], pids[3] }) do
      if not dead(tonumber(pid)) then mp.kill(tonumber(pid), "KILL") end
    end
    for _, name in ipairs({ "s.lua", "pids", "out", "status" }) do os.remove(dir .. "/" .. name) end
    os.remove(dir)
    assert.is_true(ok, "no message: " .. out)
    assert.truthy(out:find("long-one (pid " .. pids[2] .. ")", 1, true), out)
    assert.truthy(out:find("Ctrl-C stops them", 1, true), out)
    assert.is_true(ended, "Ctrl-C did not end the script")
    assert.equal("130\n", status)             -- it died of the SIGINT
    assert.is_true(wait_until(function() return dead(tonumber(pids[2])) and dead(tonumber(pids[3])) end, 5),
      "a child survived")
  end)
end)

describe("Process:join (timeouts)", function()
  it("takes math.huge as no limit and says a NaN timeout is not a number", function()
    local p = mp.Process(function() return 1 end):start()
    support.assert_error_with("lmp: timeout must be a number, got nan", p.join, p, 0 / 0)
    assert.is_true(p:join(math.huge))
    local p2 = mp.Process(function() return 2 end):start()
    assert.is_true(p2:join(1e300))
    assert.equal(2, p2:get(math.huge))
  end)
end)
