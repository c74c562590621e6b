-- The apply_async rows of the fault matrix: spec/faults_spec.lua, run with
-- the argument "apply_async" (see ONLY_API there). They hold two of the
-- matrix's three 256 MiB cases, so they are a file of their own, which
-- lmp-busted runs beside the rest of spec/faults_spec.lua.
local src = debug.getinfo(1, "S").source:sub(2)
local dir = src:match("^(.*)/[^/]*$") or "."
assert(loadfile(dir .. "/faults_spec.lua", "t", _ENV))("apply_async")
