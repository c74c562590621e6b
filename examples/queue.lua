-- Python's classic Queue example, in Lua: one process writes values into a
-- queue, another reads them; the parent waits for the writer, then stops the
-- reader (it loops for ever, as in Python).
--   lua5.4 examples/queue.lua      (from the repository root, after `make`)
local mp = require "lmp"

local function write(q)
  print(string.format("Process to write: %d", mp.getpid()))
  for _, value in ipairs({ "A", "B", "C" }) do
    print(string.format("Put %s to queue...", value))
    q:put(value)
    mp.sleep(math.random())
  end
end

local function read(q)
  print(string.format("Process to read: %d", mp.getpid()))
  while true do
    local value = q:get()
    print(string.format("Get %s from queue.", value))
  end
end

io.stdout:setvbuf("line")             -- the two children share the terminal
local q = mp.Queue()
local pw = mp.Process(write, q)
local pr = mp.Process(read, q)
pw:start()
pr:start()
pw:join()
-- the reader may still be printing the last value: give it the chance
while not q:empty() do mp.sleep(0.01) end
mp.sleep(0.1)
pr:terminate()
pr:join()
