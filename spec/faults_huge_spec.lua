-- The three groups of the fault matrix that hold a 256 MiB case:
-- spec/faults_spec.lua, run with the argument "huge" (see ONLY_HUGE there).
-- They take over half of that file's time, so they are a file of their own,
-- which lmp-busted runs beside the rest.
local src = debug.getinfo(1, "S").source:sub(2)
local dir = src:match("^(.*)/[^/]*$") or "."
assert(loadfile(dir .. "/faults_spec.lua", "t", _ENV))("huge")
