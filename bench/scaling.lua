--[==[
How much two processes at once get done on this machine, against one: the
ceiling for any runner that spreads a suite over processes. Three workloads,
each run alone and then as two copies at once, in fresh lua5.4 processes:

  cpu    a pure Lua loop
  fork   300 Process start+join from a 20 MB heap (page tables, copy-on-write)
  alloc  40 fresh 64 MiB strings (page faults)

  lua5.4 bench/scaling.lua [ROUNDS]          (default 2 rounds)

"gain" is 2 x (time alone) / (time of two at once): 2.0 means the second CPU
doubles the work done, 1.0 that it adds nothing.
]==]
package.cpath = "./?.so;" .. package.cpath
local mp = require "lmp"

local ROUNDS = tonumber(arg[1]) or 2
local ROOT = (debug.getinfo(1, "S").source:sub(2):match("^(.*)/bench/[^/]*$") or ".")

local WORKLOADS = {
  { "cpu", "local x = 0 for i = 1, 3e8 do x = x + i % 7 end" },
  { "fork", ("package.cpath = %q .. package.cpath\n"):format(ROOT .. "/?.so;") .. [[
local mp = require "lmp"
local heap = {} for i = 1, 200000 do heap[i] = { i } end
for _ = 1, 300 do mp.Process(function() return 1 end):start():join() end]] },
  { "alloc", [[for _ = 1, 40 do local s = string.rep("x", 64 * 1024 * 1024) s = nil collectgarbage() end]] },
}

-- wall seconds of `copies` fresh interpreters running `code` at once
local function run(code, copies)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(code)
  f:close()
  local cmd = {}
  for i = 1, copies do cmd[i] = "lua5.4 " .. script .. " &" end
  local t0 = mp.time()
  os.execute(table.concat(cmd, " ") .. " wait")
  local t = mp.time() - t0
  os.remove(script)
  return t
end

print(("two processes at once against one, %d CPUs, %s"):format(mp.cpu_count(), os.date("%Y-%m-%d %H:%M")))
print("| workload | alone (s) | two at once (s) | gain |")
print("|---|---|---|---|")
for _, w in ipairs(WORKLOADS) do
  for _ = 1, ROUNDS do
    local one = run(w[2], 1)
    local two = run(w[2], 2)
    print(("| %s | %.2f | %.2f | %.2f |"):format(w[1], one, two, 2 * one / two))
    io.stdout:flush()
  end
end
