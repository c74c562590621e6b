-- The 0.2.0 release. Build from a checkout, without network:
--   luarocks --lua-version=5.4 make rockspec/lmp-0.2.0-1.rockspec [--tree DIR]
-- (lmp-scm-1.rockspec is the same build, for the development version).
rockspec_format = "3.0"
package = "lmp"
version = "0.2.0-1"
source = {
   -- Placeholder: the project has no public URL yet. `luarocks make` builds
   -- from the local checkout and never fetches this.
   url = "git+https://example.invalid/lmp.git",
   tag = "v0.2.0",
}
description = {
   summary = "Python's multiprocessing for Lua: fork, Process, Pool",
   detailed = [[
lmp runs Lua functions in forked worker processes: mp.Process, mp.Pool
(apply, map, imap, starmap, async variants) and a serializer (mp.encode /
mp.decode) for values, tables with cycles and closures with upvalues.
Linux only.]],
   license = "MIT",
   labels = { "multiprocessing", "fork", "parallel", "serialization" },
}
-- Linux only: lmp uses prctl(PR_SET_PDEATHSIG), pidfd_open, epoll, memfd
-- and sched_getaffinity.
supported_platforms = { "linux" }
dependencies = {
   "lua >= 5.4, < 5.5",
}
build = {
   type = "builtin",
   -- installed beside the rock: the user docs and the LuaLS definitions
   -- (add .../rocks-5.4/lmp/<version>/types to workspace.library)
   copy_directories = { "doc", "types" },
   modules = {
      lmp = {
         sources = {
            "src/buf.c",
            "src/codec.c",
            "src/cond.c",
            "src/conn.c",
            "src/decode.c",
            "src/encbuf.c",
            "src/encode.c",
            "src/ident.c",
            "src/ipc.c",
            "src/libvals.c",
            "src/lmp.c",
            "src/luax.c",
            "src/phash.c",
            "src/pool.c",
            "src/pool_job.c",
            "src/pool_report.c",
            "src/pool_result.c",
            "src/pool_sched.c",
            "src/pool_worker.c",
            "src/process.c",
            "src/process_child.c",
            "src/procfns.c",
            "src/queue.c",
            "src/runtime.c",
            "src/shm.c",
            "src/shvalue.c",
            "src/sync.c",
            "src/sys.c",
            "src/tr_fork.c",
            "src/waitobj.c",
            "src/wire.c",
         },
         incdirs = { "src" },
      },
   },
   -- lmp-busted (needs busted 2.x at run time; see doc/guide.md)
   install = {
      bin = { ["lmp-busted"] = "bin/lmp-busted" },
   },
   -- The builtin backend has no per-module compiler flags: it compiles with
   -- luarocks' CFLAGS (Debian: -O2 -fPIC) in the compiler's default dialect,
   -- which accepts the C99 sources; each source sets its own feature-test
   -- macros, and only luaopen_lmp has default visibility. For the strict
   -- flags use the Makefile, or pass them on the command line:
   --   luarocks make rockspec/lmp-scm-1.rockspec CFLAGS="-O2 -fPIC -std=c99"
}
test = {
   type = "busted",
}
