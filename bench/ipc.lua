--[[
W7 queue, W8 pipe, W9 locks and shared values (../shared/BENCHMARKS.md),
lmp beside Python's multiprocessing (fork) and, for W8, a raw C pipe
ping-pong (bench/pingpong.c), interleaved, each measurement in a fresh
process.

  lua5.4 bench/ipc.lua [--runs N] [W7 W8 W9 | row ids]
  lua5.4 bench/ipc.lua --one W7int        -- one lmp measurement

Rows: W7int (10^6 small ints, 1 producer -> 1 consumer, items/s), W7str
(10^4 strings of 10 KB, MB/s), W7mpmc (2 producers x 2 consumers, 10^6
ints, items/s), W8 (10^5 round trips of {i, "x"} over a duplex Pipe, µs),
W9lock (uncontended acquire+release, ns/pair), W9locked (2 processes x 10^6
increments under the Value's lock, increments/s), W9atomic (the same with
Value:add, increments/s; Python has no atomic add, so its side is its
locked increment).
--]]
local BENCH = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = BENCH .. "/?.lua;" .. package.path
local B = require "benchlib"
local check = B.check

local N_INT, N_STR, STR_LEN, N_RT, N_LOCK, N_INC = 1000000, 10000, 10000, 100000, 1000000, 1000000

local ROWS = {
  W7 = { "W7int", "W7str", "W7mpmc" }, W8 = { "W8" }, W9 = { "W9lock", "W9locked", "W9atomic" },
}

---------------------------------------------------------------- lmp side
local one = {}

function one.W7int(mp)
  local q = mp.Queue()
  local t0 = mp.time()
  local p = mp.Process(function() for i = 1, N_INT do q:put(i) end end):start()
  local sum = 0
  for _ = 1, N_INT do sum = sum + q:get() end
  local t = mp.time() - t0
  p:join()
  check(sum == N_INT * (N_INT + 1) // 2, "W7int sum")
  return N_INT / t, t
end

function one.W7str(mp)
  local q = mp.Queue()
  local s = string.rep("x", STR_LEN)
  local t0 = mp.time()
  local p = mp.Process(function() for _ = 1, N_STR do q:put(s) end end):start()
  local bytes = 0
  for _ = 1, N_STR do bytes = bytes + #q:get() end
  local t = mp.time() - t0
  p:join()
  check(bytes == N_STR * STR_LEN, "W7str bytes")
  return bytes / t / 1e6, t
end

function one.W7mpmc(mp)
  local q, out = mp.Queue(), mp.Queue()
  local t0 = mp.time()
  local ps = {}
  for _ = 1, 2 do
    ps[#ps + 1] = mp.Process(function()
      local n = 0
      while q:get() ~= false do n = n + 1 end
      out:put(n)
    end):start()
  end
  for k = 1, 2 do
    ps[#ps + 1] = mp.Process(function()
      for i = 1, N_INT // 2 do q:put(k * N_INT + i) end
    end):start()
  end
  ps[3]:join()
  ps[4]:join()
  q:put(false)
  q:put(false)
  local n = out:get() + out:get()
  local t = mp.time() - t0
  ps[1]:join()
  ps[2]:join()
  check(n == N_INT, "W7mpmc count")
  return N_INT / t, t
end

function one.W8(mp)
  local a, b = mp.Pipe()
  local p = mp.Process(function()
    while true do
      local v = b:recv()
      if v == nil then break end
      b:send(v)
    end
  end):start()
  a:send({ 0, "x" })
  a:recv()
  local t0 = mp.time()
  for i = 1, N_RT do
    a:send({ i, "x" })
    local r = a:recv()
    if r[1] ~= i then check(false, "W8 echo") end
  end
  local t = mp.time() - t0
  a:send(nil)
  p:join()
  return t / N_RT * 1e6, t
end

function one.W9lock(mp)
  local l = mp.Lock()
  for _ = 1, 1000 do l:acquire() l:release() end
  local t0 = mp.time()
  for _ = 1, N_LOCK do
    l:acquire()
    l:release()
  end
  local t = mp.time() - t0
  return t / N_LOCK * 1e9, t
end

local function increments(mp, body)
  local v = mp.Value("i", 0)
  local go = mp.Event()
  local ps = {}
  for _ = 1, 2 do ps[#ps + 1] = mp.Process(function() go:wait() body(v) end):start() end
  mp.sleep(0.05)
  local t0 = mp.time()
  go:set()
  ps[1]:join()
  ps[2]:join()
  local t = mp.time() - t0
  check(v.value == 2 * N_INC, "final value " .. v.value)
  return 2 * N_INC / t, t
end

function one.W9locked(mp)
  return increments(mp, function(v)
    local l = v:get_lock()
    for _ = 1, N_INC do
      l:acquire()
      v.value = v.value + 1
      l:release()
    end
  end)
end

function one.W9atomic(mp)
  return increments(mp, function(v)
    for _ = 1, N_INC do v:add(1) end
  end)
end

---------------------------------------------------------------- driver
local opts = B.parse_args(arg)
if opts.one then
  check(one[opts.one], "ipc.lua: --one takes a row id, got " .. tostring(opts.one))
  local mp = require "lmp"
  collectgarbage()
  local v, t = one[opts.one](mp)
  print(string.format("RESULT %s %.6g seconds=%.6f", opts.one, v, t))
  io.stdout:flush()
  os.exit(0)
end

local names = #opts.names > 0 and opts.names or { "W7", "W8", "W9" }
local rows = {}
for _, n in ipairs(names) do
  if ROWS[n] then
    for _, r in ipairs(ROWS[n]) do rows[#rows + 1] = r end
  elseif one[n] then
    rows[#rows + 1] = n
  else
    error("ipc.lua: unknown workload " .. n)
  end
end

local lua, py = B.quote(B.lua) .. " " .. B.quote(BENCH .. "/ipc.lua") .. " --one ",
  B.python .. " " .. B.quote(BENCH .. "/py_ipc.py") .. " "
for _, r in ipairs(rows) do
  local sides = {
    { name = "lmp", key = r, cmd = lua .. r },
    { name = "python", key = r, cmd = py .. r .. (r == "W9atomic" and " locked" or "") },
  }
  if r:match("^W7") then
    -- Python's other queue: SimpleQueue (a locked pipe, no feeder thread)
    sides[3] = { name = "raw", key = r, cmd = py .. r .. " simple" }
  elseif r == "W8" then
    sides[3] = { name = "raw", key = "pingpong_us",
      cmd = B.quote(B.ensure_built("pingpong")) .. " " .. N_RT .. " 1" }
  end
  local out = B.interleave(r, sides, opts.runs)
  B.report(r, out, { "lmp", "python", "raw" })
end
