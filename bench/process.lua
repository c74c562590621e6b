--[[
W5: start and join a do-nothing mp.Process 1,000 times, µs per process;
beside it a raw C fork+_exit+waitpid loop (bench/rawfork.c) and Python's
multiprocessing.Process (fork context) start+join, interleaved, each
measurement in a fresh process.

  lua5.4 bench/process.lua [--runs N]
  lua5.4 bench/process.lua --one W5        -- one lmp measurement
--]]
local BENCH = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = BENCH .. "/?.lua;" .. package.path
local B = require "benchlib"
local check = B.check

local ITERS = 1000

local opts = B.parse_args(arg)
if opts.one then
  check(opts.one == "W5", "process.lua: --one takes W5")
  local mp = require "lmp"
  do -- warm up outside the timed region
    local p = mp.Process(function() end)
    p:start()
    p:join()
    check(p.exitcode == 0, "warm-up exit code")
  end
  collectgarbage()
  local t0 = mp.time()
  for _ = 1, ITERS do
    local p = mp.Process(function() end)
    p:start()
    p:join()
    if p.exitcode ~= 0 then check(false, "child exit code " .. tostring(p.exitcode)) end
  end
  local t = mp.time() - t0
  print(string.format("RESULT w5_us %.6g seconds=%.6f", t / ITERS * 1e6, t))
  io.stdout:flush()
else
  for _, n in ipairs(opts.names) do
    if n ~= "W5" then error("process.lua: unknown workload " .. n) end
  end
  local sides = {
    { name = "lmp", key = "w5_us",
      cmd = B.quote(B.lua) .. " " .. B.quote(BENCH .. "/process.lua") .. " --one W5" },
    { name = "python", key = "w5_us",
      cmd = B.python .. " " .. B.quote(BENCH .. "/py_process.py") .. " W5 " .. ITERS },
    { name = "raw", key = "rawfork_us",
      cmd = B.quote(B.ensure_built("rawfork")) .. " " .. ITERS .. " 1" },
  }
  local out = B.interleave("W5", sides, opts.runs)
  B.report("W5", out, { "lmp", "python", "raw" })
end
