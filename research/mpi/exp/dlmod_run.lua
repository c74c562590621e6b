-- dlmod_run.lua [global] -- loads dlmod.so with require (RTLD_LOCAL), prints
-- what the environment says, initialises MPI (optionally promoting libmpi
-- to RTLD_GLOBAL first) and exchanges a value with the other ranks.
package.cpath = "./?.so;" .. package.cpath
package.path = ""
local global = arg[1] == "global"
local env = {}
for _, k in ipairs { "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
  "OMPI_UNIVERSE_SIZE", "PMIX_RANK", "PMIX_NAMESPACE", "PMI_SIZE", "PMI_RANK",
  "OMPI_MCA_orte_hnp_uri" } do
  env[#env + 1] = k .. "=" .. tostring(os.getenv(k))
end
local m = require "dlmod"
local size, rank = m.launched()
io.stderr:write(string.format("env: launched size=%s rank=%s; %s\n", tostring(size), tostring(rank),
  table.concat(env, " ")))
local r, n, host, t = m.init(global)
local sum, got = m.exchange()
print(string.format("rank %d/%d on %s: MPI_Init_thread %.3f s, allreduce sum %d, ring got %d (%s)",
  r, n, host, t, sum, got, global and "RTLD_GLOBAL" or "RTLD_LOCAL"))
m.finalize()
