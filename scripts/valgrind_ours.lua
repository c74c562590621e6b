-- lua5.4 scripts/valgrind_ours.lua LOG...  (make valgrind-mpi)
-- Prints the valgrind error records of the logs whose innermost frame
-- outside libc and valgrind is lmp's own code (a file of src/), and exits 1
-- if there is any.  Open MPI, PMIx, hwloc and libevent have errors and
-- leaks of their own under valgrind (uninitialised bytes in PMIx's
-- messages, strings strdup'ed at MPI_Init and never freed) that its
-- suppression file does not cover; an error reached through them is
-- theirs, even when lmp's call to MPI_Init is further down the stack.
local ours = {}
local p = assert(io.popen("ls src/*.c"))
for f in p:lines() do ours[f:match("([^/]+)$")] = true end
p:close()
local FOREIGN = { "libmpi", "libopen%-", "pmix", "mca_", "libevent", "hwloc", "openmpi" }

local function owner(rec)
  for line in rec:gmatch("[^\n]+") do
    if line:match("^==%d+==%s+at ") or line:match("^==%d+==%s+by ") then
      for _, pat in ipairs(FOREIGN) do
        if line:find(pat) then return "theirs" end
      end
      local file = line:match("%(([%w_]+%.c):%d+%)")
      if file and ours[file] then return "ours" end
    end
  end
  return "theirs"
end

local bad = 0
for _, log in ipairs(arg) do
  local text = assert(io.open(log)):read("a")
  for rec in (text .. "\n"):gmatch("(.-)\n==%d+== \n") do
    if (rec:find("definitely lost", 1, true) or rec:find("Invalid ", 1, true)
        or rec:find("uninitialised", 1, true) or rec:find("Mismatched", 1, true)
        or rec:find("overlap", 1, true)) and owner(rec) == "ours" then
      bad = bad + 1
      print(log .. ":\n" .. rec .. "\n")
    end
  end
end
print(("valgrind_ours: %d error(s) in lmp's code"):format(bad))
os.exit(bad == 0 and 0 or 1)
