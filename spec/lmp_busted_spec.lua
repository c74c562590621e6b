-- bin/lmp-busted (issue 13): busted spec files run in parallel, one forked
-- worker per file. Each case runs a fixture suite from
-- spec/fixtures/lmp-busted/ (no "_spec" in those names, so lmp's own suite
-- never picks them up) through lmp-busted and, where busted can run it too,
-- through busted, and compares what they print and how they exit. Both run
-- from the repository root in fresh interpreters (so the project's .busted
-- applies: ./lmp.so for the fixtures that use lmp).
local support = require "spec.support"
local mp = require "lmp"

local ROOT = support.ROOT
local LMP_BUSTED = ROOT .. "/bin/lmp-busted"
local FIX = "spec/fixtures/lmp-busted"

-- busted's own script (Debian: /usr/bin/busted), run by lua5.4 directly
local BUSTED
do
  local p = assert(io.popen("command -v busted"))
  BUSTED = p:read("l")
  p:close()
end

local function copy(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  return c
end

-- lmp-busted `args` (no duration cache unless asked); stdout, stderr, status
local function lmp_busted(args, env, seconds)
  local a = copy(args)
  local times = false
  for _, v in ipairs(a) do if v:match("^%-%-times") then times = true end end
  if not times then table.insert(a, 1, "--no-times") end
  env = env or {}
  env.LMP_BUSTED_TIMELINE = env.LMP_BUSTED_TIMELINE or ""   -- an outer run's setting
  return support.run_script(LMP_BUSTED, a, { dir = ROOT, env = env, seconds = seconds })
end

-- busted `args`, under lua5.4; stdout, stderr, status
local function busted(args, env)
  local a = copy(args)
  table.insert(a, 1, "--ignore-lua")
  return support.run_script(BUSTED, a, { dir = ROOT, env = env })
end

-- what may differ between two runs of busted itself: durations, addresses
local function norm(s)
  return (s:gsub(": [%d.]+ seconds", ": T seconds"):gsub("table: 0x%x+", "table: 0x"))
end

-- junit XML with attributes sorted (pl.xml writes them in hash order, which
-- changes from run to run) and without times
local function norm_xml(s)
  s = s:gsub("<(%w+)(%s[^<>]-)(/?)>", function(tag, attrs, close)
    local t = {}
    for k, v in attrs:gmatch("([%w_]+)='([^']*)'") do
      if k ~= "time" and k ~= "timestamp" then t[#t + 1] = k .. "='" .. v .. "'" end
    end
    table.sort(t)
    return "<" .. tag .. " " .. table.concat(t, " ") .. close .. ">"
  end)
  return norm(s)
end

-- a decoded json report without durations, as canonical text
local function norm_json(text)
  local json = text:match("(%b{})%s*$")
  assert(json, "no json report in:\n" .. text)
  local function canon(v)
    if type(v) ~= "table" then return string.format("%q", v) end
    local keys = {}
    for k in pairs(v) do
      if not (k == "duration" or k == "starttick" or k == "endtick" or k == "starttime"
              or k == "endtime") then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. canon(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return norm(canon(require("cjson").decode(json)))
end

local SUITE = { "-p", "%.lua$", FIX .. "/suite" }

local function with(opts, paths)
  local a = copy(opts)
  for _, p in ipairs(paths or SUITE) do a[#a + 1] = p end
  return a
end

-- runs `args` with busted and with lmp-busted: the same report (through
-- `normalize`, default norm) and the same exit status; busted's output
local function same_as_busted(args, normalize, label)
  normalize = normalize or norm
  local out1, _, st1 = busted(args)
  local out2, _, st2 = lmp_busted(args)
  assert.are.equal(normalize(out1), normalize(out2), label)
  assert.are.equal(st1, st2, label)
  return out1
end

describe("lmp-busted", function()
  describe("against busted on the same suite", function()
    it("prints the same plainTerminal report, spec output and exit status", function()
      local args = with({ "-o", "plainTerminal" })
      local out1, err1, st1 = busted(args)
      local out2, err2, st2 = lmp_busted(args)
      assert.truthy(out1:find("20 successes / 4 failures / 8 errors / 3 pending", 1, true), out1)
      assert.are.equal(norm(out1), norm(out2))
      assert.are.equal(err1, err2)
      assert.are.equal(1, st1)
      assert.are.equal(st1, st2)
    end)

    it("prints the same utfTerminal and TAP reports, verbose or not", function()
      -- busted's TAP handler fails on a file that does not compile, so TAP
      -- runs without h_syntax.lua
      for _, opts in ipairs({ { "-o", "utfTerminal" }, { "-o", "utfTerminal", "-v" },
                              { "-o", "TAP", "--exclude-pattern=syntax" },
                              { "-o", "TAP", "-v", "--exclude-pattern=syntax" } }) do
        same_as_busted(with(opts), norm, table.concat(opts, " "))
      end
    end)

    it("writes the same junit XML, times and attribute order aside", function()
      local out1 = same_as_busted(with({ "-o", "junit" }), norm_xml)
      assert.truthy(out1:find("<testsuites", 1, true), out1)
    end)

    it("writes the same json, durations aside, for files busted can encode", function()
      -- busted 2.1.1's json handler fails on pending tests and on errors
      -- outside tests (its element copies hold functions); see below
      for _, file in ipairs({ "a_passing", "b_failing", "e_tagged", "f_output" }) do
        same_as_busted({ "-o", "json", FIX .. "/suite/" .. file .. ".lua" }, norm_json, file)
      end
    end)

    it("writes json for pending tests too, which busted's own run cannot", function()
      local out, _, status = lmp_busted({ "-o", "json", FIX .. "/suite/d_pending.lua" })
      local report = require("cjson").decode(out:match("(%b{})%s*$"))
      assert.are.equal(3, #report.pendings)
      assert.are.equal(1, #report.successes)
      assert.are.equal("pending is declared pending", report.pendings[1].name)
      assert.are.equal(0, status)
    end)

    it("selects the same tests with --tags, --exclude-tags, --filter, --filter-out and --no-keep-going", function()
      for _, opts in ipairs({ { "--tags=fast" }, { "--exclude-tags=slow,group" }, { "--filter=fails" },
                              { "--filter-out=erroring" }, { "--no-keep-going" },
                              { "--shuffle", "--seed=7" }, { "--sort" } }) do
        same_as_busted(with({ "-o", "plainTerminal", table.unpack(opts) }), norm, table.concat(opts, " "))
      end
    end)

    it("lists the same tests with --list", function()
      local out1 = same_as_busted(with({ "-o", "plainTerminal", "--list", "--exclude-pattern=error" }),
                                  function(s) return s end)
      assert.truthy(out1:find("a_passing.lua:8: passing adds", 1, true), out1)
    end)

    it("reads the .busted of -C's directory and runs its helper and -e in the workers", function()
      local args = { "-o", "plainTerminal", "-C", FIX .. "/config", "-e", "FIXTURE_E = 3" }
      local env = { FIXTURE_E_EXPECTED = "3" }
      local out1, _, st1 = busted(args, env)
      local out2, _, st2 = lmp_busted(args, env)
      assert.truthy(out1:find("3 successes / 0 failures / 0 errors / 0 pending", 1, true), out1)
      assert.are.equal(norm(out1), norm(out2))
      assert.are.equal(0, st1)
      assert.are.equal(0, st2)
    end)
  end)

  describe("output", function()
    it("prints each file's own output together, never mixed with another file's", function()
      local out, _, status = lmp_busted({ "-j", "2", "-o", "TAP", "-p", "%.lua$", FIX .. "/output" })
      assert.are.equal(0, status, out)
      local lines = {}
      for line in out:gmatch("[^\n]+") do
        if line:match("^%a+ %d+$") then lines[#lines + 1] = line end
      end
      local want = {}
      for _, who in ipairs({ "one", "two" }) do
        for i = 1, 40 do want[#want + 1] = who .. " " .. i end
      end
      assert.are.same(want, lines)
      assert.truthy(out:find("1..8", 1, true), out)
    end)
  end)

  describe("faults", function()
    it("reports a file that segfaults, exits or runs past --timeout as an error and goes on", function()
      local pids = support.tmpname()
      finally(function() os.remove(pids) end)
      local out, _, status = lmp_busted({ "-j", "2", "--timeout", "2", "-o", "plainTerminal",
                                          "-p", "%.lua$", FIX .. "/faults" },
                                        { LMP_BUSTED_FIXTURE_PIDS = pids })
      assert.are.equal(1, status, out)
      assert.truthy(out:find("3 successes / 0 failures / 4 errors / 0 pending", 1, true), out)
      assert.truthy(out:find("faults/b_segv.lua:5: lmp%-busted: the process running this file %(pid %d+%) was killed by signal 11 %(SIGSEGV%), during this test"), out)
      assert.truthy(out:find("faults/c_exit.lua:3: lmp%-busted: the process running this file %(pid %d+%) exited with code 3 %(os.exit%?%), during this test"), out)
      assert.truthy(out:find("faults/d_hang.lua:5: lmp%-busted: timed out after 2 s: killed the process running this file %(pid %d+%) and the processes it started, during this test"), out)
      assert.truthy(out:find("faults/f_toplevel_exit.lua:1: lmp%-busted: the process running this file %(pid %d+%) exited with code 0 %(os.exit%?%), outside any test"), out)
      -- the output the crashing test printed, then the two passing files
      assert.truthy(out:find("about to crash", 1, true), out)
      -- the hung test and the child it started are gone
      local text = support.slurp(pids, "")
      local n = 0
      for pid in text:gmatch("%d+") do
        n = n + 1
        assert.is_true(support.wait_until(function() return support.dead(tonumber(pid)) end, 10),
          "process " .. pid .. " outlived --timeout")
      end
      assert.are.equal(2, n, text)
    end)

    -- Runs lmp-busted over the fault fixtures in the background and sends it
    -- SIGINT once the hanging fixture runs: to lmp-busted alone, or (`group`)
    -- to its whole process group, lmp-busted and its workers, as a terminal's
    -- Ctrl-C does (setsid gives it a group of its own). Returns the output
    -- (with "exit=N" at the end), the fixtures' pids and lmp-busted's pid;
    -- every process checked gone.
    local function interrupted_run(group)
      local out, pidfile, pids, script = support.tmpname(), support.tmpname(), support.tmpname(),
                                         support.tmpname()
      local lua_pid
      finally(function()
        if lua_pid and not support.dead(lua_pid) then mp.kill(lua_pid, "KILL") end
        for _, f in ipairs({ out, pidfile, pids, script }) do os.remove(f) end
      end)
      local f = assert(io.open(script, "w"))
      f:write(("cd %s || exit 1\n"):format(support.q(ROOT)),
        ("LMP_BUSTED_FIXTURE_PIDS=%s %s sh -c 'echo $$ >%s; exec lua5.4 %s --no-times -o plainTerminal -p \"%%.lua$\" %s' >%s 2>&1\n")
          :format(support.q(pids), group and "setsid" or "", pidfile, LMP_BUSTED, FIX .. "/faults", support.q(out)),
        ("echo \"exit=$?\" >>%s\n"):format(support.q(out)))
      f:close()
      assert.is_true(os.execute("sh " .. support.q(script) .. " </dev/null >/dev/null 2>&1 &"))
      assert.is_true(support.wait_until(function()
        return (support.slurp(pids, "")):match("%d+ %d+\n") ~= nil
      end, 20), "the hanging fixture never started")
      lua_pid = tonumber(support.slurp(pidfile))
      mp.sleep(0.2)
      assert(mp.kill(group and -lua_pid or lua_pid, "INT"))
      assert.is_true(support.wait_until(function()
        return (support.slurp(out, "")):find("exit=", 1, true) ~= nil
      end, 20), "lmp-busted did not stop: " .. support.slurp(out, ""))
      local text = support.slurp(out)
      for pid in support.slurp(pids):gmatch("%d+") do
        assert.is_true(support.wait_until(function() return support.dead(tonumber(pid)) end, 10),
          "process " .. pid .. " outlived the interrupt")
      end
      assert.is_true(support.dead(lua_pid))
      return text
    end

    it("stops every worker on SIGINT, prints what finished and exits non-zero", function()
      local text = interrupted_run(false)
      assert.truthy(text:find("exit=1", 1, true), text)
      assert.truthy(text:find("faults/d_hang.lua:5: lmp-busted: interrupted (Ctrl-C): stopped the process running this file", 1, true), text)
      assert.truthy(text:find("lmp%-busted: interrupted %(Ctrl%-C%): %d of 6 spec files had run to their end"), text)
      assert.truthy(text:find("stopped: " .. FIX .. "/faults/d_hang.lua", 1, true), text)
      assert.truthy(text:find("%d+ successes / 0 failures / %d+ errors / 0 pending"), text)
    end)

    it("reports each file once when Ctrl-C reaches the workers too (as from a terminal)", function()
      local text = interrupted_run(true)
      assert.truthy(text:find("exit=1", 1, true), text)
      assert.is_nil(text:find("after the file's tests had run", 1, true), text)
      local _, n = text:gsub("d_hang%.lua:%d+: [^\n]*interrupted", "")
      assert.are.equal(1, n, text)
    end)
  end)

  describe("scheduling", function()
    it("runs the longest file first by the durations of the last run, and reports in file order", function()
      local log, times = support.tmpname(), support.tmpname()
      finally(function() os.remove(log) os.remove(times) end)
      local dir = FIX .. "/order"
      -- nothing known: file order
      local out, _, status = lmp_busted({ "-j", "1", "--times=" .. times, "-o", "TAP", "-p", "%.lua$", dir },
                                        { LMP_BUSTED_FIXTURE_LOG = log })
      assert.are.equal(0, status, out)
      assert.are.equal("fast\nslow\n", support.slurp(log))
      local known = {}
      for secs, name in support.slurp(times, ""):gmatch("([%d.]+)\t([^\n]+)") do known[name] = tonumber(secs) end
      assert.is_true(known[dir .. "/slow.lua"] >= 0.5, support.slurp(times, ""))
      assert.is_true(known[dir .. "/slow.lua"] > known[dir .. "/fast.lua"], support.slurp(times, ""))
      -- now slow.lua is known to be the longer one: it starts first
      os.remove(log)
      out, _, status = lmp_busted({ "-j", "1", "--times=" .. times, "-o", "TAP", "-p", "%.lua$", dir },
                                  { LMP_BUSTED_FIXTURE_LOG = log })
      assert.are.equal(0, status, out)
      assert.are.equal("slow\nfast\n", support.slurp(log))
      assert.truthy(out:find("ok 1 - is fast\nok 2 - is slow\n", 1, true), out)
    end)
  end)

  describe("options", function()
    it("rejects a bad -j or --timeout, --coverage and --repeat", function()
      for _, case in ipairs({ { { "-j", "0" }, "-j needs a positive integer, got '0'" },
                              { { "--jobs=x" }, "-j needs a positive integer, got 'x'" },
                              { { "--timeout=-1" }, "--timeout needs a positive number of seconds" },
                              { { "--coverage" }, "--coverage is not supported" },
                              { { "--repeat=2" }, "--repeat is not supported" },
                              { { "--no-such-option" }, "unknown/bad flag: --no-such-option" } }) do
        local out, err, status = lmp_busted(with(case[1]))
        assert.are.equal(1, status, case[2])
        assert.truthy(err:find(case[2], 1, true), err .. out)
      end
    end)

    it("re-runs itself under --lua, with its arguments intact", function()
      local dir = support.tmpname()
      finally(function() os.execute("rm -rf " .. support.q(dir)) end)
      assert.is_true(os.execute("mkdir " .. support.q(dir)))
      local wrapper = dir .. "/lua"
      local f = assert(io.open(wrapper, "w"))
      f:write("#!/bin/sh\necho ran >>", support.q(dir .. "/log"), "\nexec lua5.4 \"$@\"\n")
      f:close()
      assert.is_true(os.execute("chmod +x " .. support.q(wrapper)))
      local out, err, status = lmp_busted({ "--lua=" .. wrapper, "-o", "plainTerminal",
                                            "--filter", "passing adds", FIX .. "/suite/a_passing.lua" })
      assert.are.equal(0, status, out .. err)
      assert.truthy(out:find("1 success / 0 failures / 0 errors / 0 pending", 1, true), out)
      assert.are.equal("ran\n", support.slurp(dir .. "/log"))
    end)
  end)
end)
