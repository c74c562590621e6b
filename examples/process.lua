-- mp.Process: run a function in a child process and wait for it
-- (the second example of the seed, in Lua).
-- Run from the repository root: lua5.4 examples/process.lua
local mp = require "lmp"

local function run_proc(name)
  print(("Run child process %s (%d)..."):format(name, mp.getpid()))
end

print(("Process parent %d."):format(mp.getpid()))
local p = mp.Process(run_proc, "test")
print("Child process will start.")
p:start()
p:join()
print("Child process end.")
