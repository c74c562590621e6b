-- The seed's Pool example: four workers, five tasks that sleep a random time.
--   lua5.4 examples/pool.lua      (from the repository root, after `make`)
local mp = require "lmp"

local function long_time_task(name)
  print(string.format("Run task %s (%d)...", name, mp.getpid()))
  local start = mp.time()
  mp.sleep(math.random() * 3)
  local finish = mp.time()
  print(string.format("Task %s runs %0.2f seconds.", name, finish - start))
end

print(string.format("Parent process %d.", mp.getpid()))
local p = mp.Pool(4)
for i = 0, 4 do
  p:apply_async(long_time_task, {i})
end
print("Waiting for all subprocesses done...")
p:close()
p:join()
print("All subprocesses done.")
