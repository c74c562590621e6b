-- A pipeline of processes joined by queues, with a shared counter:
--
--   reader --lines--> 3 workers --(word, count)--> merger --table--> parent
--
-- The reader streams lines into a bounded queue (it waits when the workers
-- fall behind); each worker counts the words of its lines and keeps a
-- shared tally of lines done with an atomic add; the merger sums the
-- workers' counts and hands the result back through a Pipe. One `false` per
-- worker says "no more input", as None does in Python.
--   lua5.4 examples/pipeline.lua [file]   (default: README.md)
local mp = require "lmp"

local path = ... or "README.md"
local NWORKERS = 3

local lines = mp.Queue(1000)          -- bounded: back-pressure on the reader
local counts = mp.Queue()             -- unbounded: workers never wait
local done = mp.Value("i", 0)         -- lines counted, shared
local result, result_in = mp.Pipe(false)

local reader = mp.Process(function()
  local n = 0
  for line in io.lines(path) do
    lines:put(line)
    n = n + 1
  end
  for _ = 1, NWORKERS do lines:put(false) end
  return n
end):start()

local workers = {}
for i = 1, NWORKERS do
  workers[i] = mp.Process(function()
    local mine = {}
    while true do
      local line = lines:get()
      if line == false then break end
      for word in line:lower():gmatch("%a+") do mine[word] = (mine[word] or 0) + 1 end
      done:add(1)
    end
    counts:put(mine)                   -- one message per worker
    counts:put(false)
  end):start()
end

local merger = mp.Process(function()
  local total, finished = {}, 0
  while finished < NWORKERS do
    local part = counts:get()
    if part == false then
      finished = finished + 1
    else
      for w, n in pairs(part) do total[w] = (total[w] or 0) + n end
    end
  end
  result_in:send(total)
end):start()

local total = result:recv()
local nlines = reader:get()
for _, w in ipairs(workers) do w:join() end
merger:join()

local words = {}
for w, n in pairs(total) do words[#words + 1] = { w, n } end
table.sort(words, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
print(string.format("%d lines read, %d counted by %d workers", nlines, done.value, NWORKERS))
for i = 1, math.min(5, #words) do print(string.format("%-10s %d", words[i][1], words[i][2])) end
