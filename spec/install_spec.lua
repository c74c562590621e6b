-- Packaging: each rockspec builds and installs a module that loads from
-- anywhere, with the user docs and the LuaLS types beside it. The build runs
-- on a copy of the files in a temporary directory, because the builtin
-- backend leaves objects and lmp.so in the directory it builds in (which
-- would replace the Makefile's ./lmp.so). The copy dereferences symlinks:
-- under `make test-asan` the suite runs in lmp-asan/, where the files are
-- links to the real ones.

local lfs = require "lfs"
local support = require "spec.support"
local q, sh = support.q, support.sh

local function exists(path)
  return lfs.attributes(path) ~= nil
end

local function has_luarocks()
  return sh("command -v luarocks >/dev/null 2>&1")
end

local function lines_of(text)
  local lines = {}
  for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return lines
end

-- the repository root, as an absolute path
local function root()
  -- closed at once: an open popen handle is a child (a zombie once pwd
  -- exits) until the collector gets to it, which other specs would see
  local pwd = assert(io.popen("cd " .. q(support.ROOT) .. " && pwd"))
  local dir = pwd:read("l")
  pwd:close()
  return dir
end

-- installs `rockspec` into a fresh tree (or `tree`, to add to one); returns
-- the tree
local function install(rockspec, tmp, tree)
  local top = root()
  assert.is_true(sh("mkdir -p " .. q(tmp .. "/build") .. " " .. q(tmp .. "/elsewhere")))
  local files = {}
  for _, f in ipairs { "src", "rockspec", "doc", "types", "bin", "LICENSE", "Makefile" } do
    if exists(top .. "/" .. f) then files[#files + 1] = q(top .. "/" .. f) end
  end
  assert.is_true(sh("cp -RL " .. table.concat(files, " ") .. " " .. q(tmp .. "/build/")))
  -- LD_PRELOAD (set by `make test-asan`) is dropped for the build tools only.
  local log = tmp .. "/luarocks.log"
  tree = tree or tmp .. "/tree"
  local built = sh("cd " .. q(tmp .. "/build") .. " && env -u LD_PRELOAD"
    .. " luarocks --lua-version=5.4 make " .. q(rockspec) .. " --tree " .. q(tree)
    .. " >" .. q(log) .. " 2>&1")
  assert(built, "luarocks make failed:\n" .. support.slurp(log, ""))
  return tree
end

-- runs `body` (Lua lines) in lua5.4 from another directory, with only the
-- tree's lib/lua/5.4 added to package.cpath; its output lines (`what` names
-- the failure)
local function run_installed(tree, tmp, body, what)
  local prog = table.concat({
    'package.cpath = ' .. ("%q"):format(tree .. "/lib/lua/5.4/?.so;") .. ' .. package.cpath',
    table.concat(body, "\n"),
  }, "\n")
  local out = tmp .. "/out"
  local ran = sh("cd " .. q(tmp .. "/elsewhere") .. " && env -u LUA_CPATH -u LUA_CPATH_5_4 -u LD_PRELOAD lua5.4 -e "
    .. q(prog) .. " >" .. q(out) .. " 2>&1")
  local lines = lines_of(support.slurp(out, ""))
  assert(ran, what .. " failed:\n" .. table.concat(lines, "\n"))
  return lines
end

-- loads the installed module from another directory: its path, _VERSION and
-- a round trip
local function load_installed(tree, tmp)
  return run_installed(tree, tmp, {
    'local mp = require "lmp"',
    'io.write(package.searchpath("lmp", package.cpath), "\\n")',
    'io.write(mp._VERSION, "\\n")',
    'io.write(select("#", mp.decode(mp.encode(nil, 1, "x"))), "\\n")',
  }, "loading the installed module")
end

-- the sources a rockspec lists: lmp's builtin module list, or (lmp-mpi, a
-- make build) the MPI_SRC it hands the Makefile
local function rock_sources(path)
  local env = {}
  assert(loadfile(path, "t", env))()
  local list = {}
  if env.build.type == "make" then
    for f in env.build.build_variables.MPI_SRC:gmatch("%S+") do list[#list + 1] = f end
  else
    for _, f in ipairs(env.build.modules.lmp.sources) do list[#list + 1] = f end
  end
  table.sort(list)
  return list, env
end

-- The naming rule: src/*_mpi.c make the lmp.mpi module (linked with libmpi,
-- rockspec lmp-mpi), every other src/*.c makes lmp (Makefile: SRC, MPI_SRC).
local function src_files(mpi)
  local list = {}
  for f in lfs.dir(support.ROOT .. "/src") do
    if f:match("%.c$") and (f:match("_mpi%.c$") ~= nil) == mpi then list[#list + 1] = "src/" .. f end
  end
  table.sort(list)
  return list
end

for _, name in ipairs { "lmp-scm-1", "lmp-0.2.0-1" } do
  describe("rockspec/" .. name .. ".rockspec", function()
    it("lists every C source of src/ but the MPI module's (*_mpi.c), and only those", function()
      local listed, spec = rock_sources(support.ROOT .. "/rockspec/" .. name .. ".rockspec")
      assert.are.same(src_files(false), listed)
      assert.are.same({ "lua >= 5.4, < 5.5" }, spec.dependencies)
      assert.are.same({ "linux" }, spec.supported_platforms)
      assert.are.equal("MIT", spec.description.license)
    end)

    it("installs with luarocks into a tree, with user docs and types, and loads from another directory", function()
      if not has_luarocks() then
        pending("luarocks is not installed")
        return
      end
      local tmp = support.tmpname()
      finally(function() sh("rm -rf " .. q(tmp)) end)
      local tree = install("rockspec/" .. name .. ".rockspec", tmp)
      local lines = load_installed(tree, tmp)
      assert.are.equal(tree .. "/lib/lua/5.4/lmp.so", lines[1])
      assert.are.equal(require("lmp")._VERSION, lines[2])
      assert.are.equal("3", lines[3])

      local version = name:match("^lmp%-(.*)$")
      local rock = tree .. "/lib/luarocks/rocks-5.4/lmp/" .. version
      for _, f in ipairs { "doc/guide.md", "doc/api.md", "doc/performance.md", "types/lmp.lua" } do
        assert.is_true(exists(rock .. "/" .. f), f .. " is not installed")
      end
      -- installed docs are user docs: the design notes stay in the source tree
      for f in lfs.dir(rock .. "/doc") do
        assert.is_nil(f:lower():find("design", 1, true), "doc/" .. f .. " is installed")
      end

      -- lmp-busted is installed as a command of the tree
      local help = tmp .. "/help"
      assert(sh("env -u LD_PRELOAD " .. q(tree .. "/bin/lmp-busted") .. " --help >" .. q(help) .. " 2>&1"),
        "lmp-busted --help failed:\n" .. support.slurp(help, ""))
      assert.truthy(support.slurp(help, ""):find("Usage: lmp-busted", 1, true), support.slurp(help, ""))
    end)
  end)
end

-- the MPI module's rocks: its sources by the naming rule, and an install
-- beside lmp's (needs Open MPI's mpicc as well as luarocks)
for _, v in ipairs { "scm-1", "0.2.0-1" } do
  local name = "lmp-mpi-" .. v
  describe("rockspec/" .. name .. ".rockspec", function()
    it("lists every src/*_mpi.c, and only those, and depends on the same lmp", function()
      local listed, spec = rock_sources(support.ROOT .. "/rockspec/" .. name .. ".rockspec")
      assert.are.same(src_files(true), listed)
      assert.is_true(#listed > 0)
      local lmpv = v == "scm-1" and "scm-1" or v:match("^(.-)%-%d+$")
      assert.are.same({ "lua >= 5.4, < 5.5", "lmp == " .. lmpv }, spec.dependencies)
      assert.are.same({ library = "mpi" }, spec.external_dependencies.MPI)
      assert.are.same({ ["lmp.mpi"] = "lmp/mpi.so" }, spec.build.install.lib)
    end)

    it("installs with luarocks beside lmp, and lmp.mpi loads from another directory", function()
      if not has_luarocks() then
        pending("luarocks is not installed")
        return
      end
      if not sh("command -v mpicc >/dev/null 2>&1") then
        pending("Open MPI (mpicc) is not installed: sh scripts/deps.sh mpi")
        return
      end
      local tmp = support.tmpname()
      finally(function() sh("rm -rf " .. q(tmp)) end)
      local tree = install("rockspec/lmp-" .. v .. ".rockspec", tmp)
      install("rockspec/" .. name .. ".rockspec", tmp, tree)
      local lines = run_installed(tree, tmp, {
        'local m = require "lmp.mpi"',
        'io.write(package.searchpath("lmp.mpi", package.cpath), "\\n")',
        'io.write(m._VERSION, "\\n", m.library, "\\n")',
      }, "loading the installed lmp.mpi")
      assert.are.equal(tree .. "/lib/lua/5.4/lmp/mpi.so", lines[1])
      assert.are.equal(require("lmp")._VERSION, lines[2])
      assert.truthy(lines[3]:find("MPI", 1, true), lines[3])
    end)
  end)
end
