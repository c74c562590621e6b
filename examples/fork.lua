-- mp.fork: one call, two returns (the first example of the seed, in Lua).
-- Run from the repository root: lua5.4 examples/fork.lua
local mp = require "lmp"

print(("Process (%d) start..."):format(mp.getpid()))

local pid = assert(mp.fork())
if pid == 0 then
  print(("I am child process (%d) and my parent is (%d)."):format(mp.getpid(), mp.getppid()))
else
  print(("I (%d) just created a child process (%d)."):format(mp.getpid(), pid))
  mp.wait(pid)   -- reap the child (Python's example leaves it to init)
end
