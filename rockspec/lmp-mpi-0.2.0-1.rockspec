-- lmp.mpi: the Pool backend over MPI ranks (mp.Pool{backend = "mpi"}), a
-- module of its own so that lmp itself never links libmpi. Needs Open MPI
-- (Debian: apt-get install openmpi-bin libopenmpi-dev) and the lmp rock.
-- The 0.2.0 release. Build from a checkout, without network, after lmp:
--   luarocks --lua-version=5.4 make rockspec/lmp-0.2.0-1.rockspec [--tree DIR]
--   luarocks --lua-version=5.4 make rockspec/lmp-mpi-0.2.0-1.rockspec [--tree DIR]
-- Its sources are the files of src/ named *_mpi.c (spec/install_spec.lua
-- checks that this list and lmp's split src/*.c that way). It builds with
-- the Makefile, which takes MPI's compiler flags from `mpicc --showme`
-- (set MPICC to use another wrapper), as mpi.h is off the default include
-- path on Debian.
rockspec_format = "3.0"
package = "lmp-mpi"
version = "0.2.0-1"
source = {
   -- Placeholder, as in lmp-scm-1.rockspec: `luarocks make` never fetches it.
   url = "git+https://example.invalid/lmp.git",
   tag = "v0.2.0",
}
description = {
   summary = "lmp's Pool across machines: workers are MPI ranks (Open MPI)",
   detailed = [[
Under mpirun, mp.Pool{backend = "mpi"} gives rank 0 a Pool whose workers are
ranks 1..n-1, with lmp's whole Pool API; the other ranks serve tasks and
exit when rank 0's pool ends. Linux only.]],
   license = "MIT",
   labels = { "multiprocessing", "mpi", "parallel", "cluster" },
}
supported_platforms = { "linux" }
dependencies = {
   "lua >= 5.4, < 5.5",
   "lmp == 0.2.0",
}
external_dependencies = {
   MPI = { library = "mpi" },
}
build = {
   type = "make",
   build_target = "mpi",
   build_variables = {
      CFLAGS = "$(CFLAGS) -std=c99 -fvisibility=hidden",
      LUA_INCDIR = "$(LUA_INCDIR)",
      MPI_SRC = "src/ch_mpi.c src/lmp_mpi.c src/net_mpi.c src/tr_mpi.c",
   },
   install_pass = false,
   install = {
      lib = { ["lmp.mpi"] = "lmp/mpi.so" },
   },
}
