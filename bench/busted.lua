--[==[
Wall time of lmp's own spec suite under plain busted and under
`lmp-busted -j N`, interleaved (busted, lmp-busted, busted, ...), each run a
fresh process from the repository root; prints one row per run and the
median ratio. Both runs must report the same totals.

  lua5.4 bench/busted.lua [RUNS [JOBS]]      (default: 3 runs, -j 2)

lmp-busted reads and updates .lmp-busted-times (longest file first); the
first line says whether that file existed when the benchmark started.
]==]
package.cpath = "./?.so;" .. package.cpath
local mp = require "lmp"

local RUNS = tonumber(arg[1]) or 3
local JOBS = tonumber(arg[2]) or 2

local function loadavg()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("l") or "?"
  if f then f:close() end
  return s:match("^%S+") or "?"
end

-- runs `cmd`; returns its wall time, its totals line (or what went wrong)
-- and the CPU seconds (user + system) it and its children used
local function run(cmd)
  local out, cpu = os.tmpname(), os.tmpname()
  local t0 = mp.time()
  local _, _, status = os.execute(("/usr/bin/time -o %s -f '%%U %%S' %s >%s 2>&1"):format(cpu, cmd, out))
  local wall = mp.time() - t0
  local f = assert(io.open(cpu))
  local u, sy = f:read("a"):match("([%d.]+) ([%d.]+)%s*$")
  f:close()
  os.remove(cpu)
  f = assert(io.open(out))
  local text = f:read("a")
  f:close()
  os.remove(out)
  text = text:gsub("\27%[[%d;]*m", "")
  if not text:find(" 0 failures / 0 errors", 1, true) then
    local keep = os.tmpname()
    local k = assert(io.open(keep, "w"))
    k:write(text)
    k:close()
    io.stderr:write("failures in `", cmd, "`: its output is in ", keep, "\n")
  end
  local totals = text:match("(%d+ success[a-z]* / %d+ failures? / %d+ errors? / %d+ pending)")
  return wall, totals or ("no summary, exit " .. tostring(status) .. ": " .. text:sub(-300)),
         (tonumber(u) or 0) + (tonumber(sy) or 0)
end

local cache = io.open(".lmp-busted-times") ~= nil
print(("lmp's suite, %d interleaved runs each, lmp-busted -j %d, %d CPUs, %s, %s"):format(
  RUNS, JOBS, mp.cpu_count(), os.date("%Y-%m-%d %H:%M"),
  cache and "with .lmp-busted-times from earlier runs" or "no .lmp-busted-times yet (file order first)"))
print("(load: the 1-minute load average when each run started; CPU: user + system seconds of the run)")
print("| run | busted (s) | load | CPU (s) | lmp-busted -j " .. JOBS .. " (s) | load | CPU (s) | ratio | totals |")
print("|---|---|---|---|---|---|---|---|---|")
local ratios = {}
for i = 1, RUNS do
  local bl = loadavg()
  local b, bt, bc = run("busted --lua=lua5.4 -o plainTerminal")
  local ll = loadavg()
  local l, lt, lc = run("lua5.4 bin/lmp-busted -j " .. JOBS .. " -o plainTerminal")
  local same = bt == lt and bt or (bt .. " vs " .. lt)
  ratios[#ratios + 1] = l / b
  print(("| %d | %.1f | %s | %.0f | %.1f | %s | %.0f | %.2f | %s |"):format(i, b, bl, bc, l, ll, lc, l / b, same))
  io.stdout:flush()
end
table.sort(ratios)
print(("median ratio %.2f"):format(ratios[(#ratios + 1) // 2]))
