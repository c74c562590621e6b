--[[
W1-W4: lmp Pool against Python multiprocessing (fork) and raw C references.

  lua5.4 bench/pool.lua [W1 W2 W3 W4 | W1default W1chunk1 W4str W4floats] [--runs N]
  lua5.4 bench/pool.lua --one W1default     -- one lmp measurement, one RESULT line

Each measurement runs in a fresh process; the sides (lmp, python, raw C
where defined) are interleaved round by round. Pools are created and warmed
outside the timed region; W4 data is built (as globals) before the pool
forks, so only the transfer is timed.
--]]
local BENCH = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = BENCH .. "/?.lua;" .. package.path
local B = require "benchlib"
local check = B.check

local N_W1 = 100000
local N_W2 = 10000
local N_W3 = 1750000
local W3_CALLS = 40
local STR_BYTES = 64 * 1024 * 1024
local N_FLOATS = 1000000

local SUBS = { "W1default", "W1chunk1", "W2", "W3", "W4str", "W4floats" }
local GROUPS = { W1 = { "W1default", "W1chunk1" }, W4 = { "W4str", "W4floats" } }

---------------------------------------------------------------- one run (lmp)
local one = {}

local function pool2(mp)
  local pool = mp.Pool(2)
  local warm = pool:map(function(x) return x end, { 1, 2, 3, 4, 5, 6, 7, 8 }, 1)
  check(#warm == 8 and warm[1] == 1 and warm[8] == 8, "warm-up map")
  return pool
end

local function w1(mp, chunksize)
  local items = {}
  for i = 1, N_W1 do items[i] = i end
  local pool = pool2(mp)
  collectgarbage()
  local t0 = mp.time()
  local res = pool:map(function(x) return x end, items, chunksize)
  local t = mp.time() - t0
  pool:terminate()
  check(#res == N_W1 and res[1] == 1 and res[12345] == 12345 and res[N_W1] == N_W1,
    "W1 map result")
  return N_W1 / t, string.format("seconds=%.6f", t)
end

function one.W1default(mp) return "w1_default", w1(mp, nil) end
function one.W1chunk1(mp) return "w1_chunk1", w1(mp, 1) end

function one.W2(mp)
  local pool = pool2(mp)
  collectgarbage()
  local t0 = mp.time()
  for i = 1, N_W2 do
    local r = pool:apply(function(x) return x + 1 end, { i })
    if r ~= i + 1 then check(false, "W2 apply result") end
  end
  local t = mp.time() - t0
  pool:terminate()
  return "w2_us", t / N_W2 * 1e6, string.format("seconds=%.6f", t)
end

function one.W3(mp)
  local N = N_W3
  local function burn(seed)
    local acc = seed
    for i = 1, N do acc = (acc * 31 + i) % 1000000007 end
    return acc
  end
  local seeds = {}
  for s = 0, W3_CALLS - 1 do seeds[#seeds + 1] = s end
  local pool = pool2(mp)
  collectgarbage()
  -- serial before and after the pool run; their mean damps CPU-speed drift
  local function serialrun()
    local out = {}
    local t0 = mp.time()
    for k, s in ipairs(seeds) do out[k] = burn(s) end
    return out, mp.time() - t0
  end
  local serial, ts1 = serialrun()
  local t0 = mp.time()
  local par = pool:map(burn, seeds)
  local tp = mp.time() - t0
  local _, ts2 = serialrun()
  local ts = (ts1 + ts2) / 2
  pool:terminate()
  check(#par == W3_CALLS, "W3 result count")
  for k = 1, W3_CALLS do check(par[k] == serial[k], "W3 serial and pool results differ") end
  return "w3_speedup", ts / tp, string.format("serial_ms=%.3f,%.3f pool_ms=%.3f",
    ts1 * 1e3, ts2 * 1e3, tp * 1e3)
end

function one.W4str(mp)
  local pat = {}
  for c = 0, 255 do pat[#pat + 1] = string.char(c) end
  BIG = string.rep(table.concat(pat), STR_BYTES // 256) -- global: the worker has it after fork
  local pool = pool2(mp)
  collectgarbage()
  local t0 = mp.time()
  local res = pool:apply(function() return BIG end)
  local t = mp.time() - t0
  pool:terminate()
  check(type(res) == "string" and #res == STR_BYTES and res == BIG, "W4 string result")
  return "w4_str_mbps", STR_BYTES / t / 1e6, string.format("seconds=%.6f", t)
end

function one.W4floats(mp)
  FLOATS = {} -- global: the worker has it after fork
  for i = 1, N_FLOATS do FLOATS[i] = (i - 1) * 0.5 + 0.25 end
  local pool = pool2(mp)
  collectgarbage()
  local t0 = mp.time()
  local res = pool:apply(function() return FLOATS end)
  local t = mp.time() - t0
  pool:terminate()
  check(type(res) == "table" and #res == N_FLOATS and res[1] == 0.25
    and res[N_FLOATS] == (N_FLOATS - 1) * 0.5 + 0.25 and res[4243] == 4242 * 0.5 + 0.25
    and math.type(res[777]) == "float", "W4 floats result")
  return "w4_floats_ms", t * 1e3, string.format("seconds=%.6f", t)
end

---------------------------------------------------------------- driver
local KEYS = {
  W1default = "w1_default", W1chunk1 = "w1_chunk1", W2 = "w2_us", W3 = "w3_speedup",
  W4str = "w4_str_mbps", W4floats = "w4_floats_ms",
}

local function driver(opts)
  local want, seen = {}, {}
  local names = #opts.names > 0 and opts.names or { "W1", "W2", "W3", "W4" }
  for _, n in ipairs(names) do
    for _, s in ipairs(GROUPS[n] or { n }) do
      if not KEYS[s] then error("pool.lua: unknown workload " .. n) end
      if not seen[s] then want[#want + 1], seen[s] = s, true end
    end
  end
  local me = B.quote(BENCH .. "/pool.lua")
  local py = B.quote(BENCH .. "/py_pool.py")
  for _, id in ipairs(SUBS) do
    if seen[id] then
      local sides = {
        { name = "lmp", cmd = B.quote(B.lua) .. " " .. me .. " --one " .. id, key = KEYS[id] },
        { name = "python", cmd = B.python .. " " .. py .. " " .. id, key = KEYS[id] },
      }
      if id == "W2" then
        sides[#sides + 1] = { name = "raw", key = "pingpong_us",
          cmd = B.quote(B.ensure_built("pingpong")) .. " " .. N_W2 .. " 1" }
      elseif id == "W4str" then
        sides[#sides + 1] = { name = "raw", key = "rawpipe_mbps",
          cmd = B.quote(B.ensure_built("rawpipe")) .. " 1" }
      end
      local out = B.interleave(id, sides, opts.runs)
      B.report(id, out, { "lmp", "python", "raw" })
    end
  end
end

local opts = B.parse_args(arg)
if opts.one then
  local f = one[opts.one]
  if not f then error("pool.lua: unknown workload for --one: " .. tostring(opts.one)) end
  local mp = require "lmp"
  local key, value, extra = f(mp)
  print(string.format("RESULT %s %.6g %s", key, value, extra or ""))
  io.stdout:flush()
else
  driver(opts)
end
