-- Packaging: the rockspec builds and installs a module that loads from
-- anywhere. The build runs on a copy of src/ and rockspec/ in a temporary
-- directory, because the builtin backend leaves objects and lmp.so in the
-- directory it builds in (which would replace the Makefile's ./lmp.so).
-- The copy dereferences symlinks: under `make test-asan` the suite runs in
-- lmp-asan/, where src/ and rockspec/ are links to the real ones.

local support = require "spec.support"
local q = support.q

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true
end

-- the contents of a file, "" if it cannot be read
local function slurp(path)
  return support.slurp(path, "")
end

local function has_luarocks()
  return sh("command -v luarocks >/dev/null 2>&1")
end

describe("rockspec/lmp-scm-1.rockspec", function()
  it("installs with luarocks into a tree and loads from another directory", function()
    if not has_luarocks() then
      pending("luarocks is not installed")
      return
    end
    -- closed at once: an open popen handle is a child (a zombie once pwd
    -- exits) until the collector gets to it, which other specs would see
    local pwd = assert(io.popen("pwd"))
    local root = pwd:read("l")
    pwd:close()
    local tmp = os.tmpname()
    os.remove(tmp)
    assert.is_true(sh("mkdir -p " .. q(tmp .. "/build") .. " " .. q(tmp .. "/elsewhere")))
    finally(function() sh("rm -rf " .. q(tmp)) end)

    assert.is_true(sh("cp -RL " .. q(root .. "/src") .. " " .. q(root .. "/rockspec")
      .. " " .. q(root .. "/bin") .. " " .. q(tmp .. "/build/")))

    -- LD_PRELOAD (set by `make test-asan`) is dropped for the build tools only.
    local tree, log = tmp .. "/tree", tmp .. "/luarocks.log"
    local built = sh("cd " .. q(tmp .. "/build") .. " && env -u LD_PRELOAD"
      .. " luarocks --lua-version=5.4 make rockspec/lmp-scm-1.rockspec --tree " .. q(tree)
      .. " >" .. q(log) .. " 2>&1")
    assert(built, "luarocks make failed:\n" .. slurp(log))

    local prog = table.concat({
      'package.cpath = ' .. ("%q"):format(tree .. "/lib/lua/5.4/?.so;") .. ' .. package.cpath',
      'local mp = require "lmp"',
      'io.write(package.searchpath("lmp", package.cpath), "\\n")',
      'io.write(type(mp.encode), "\\n")',
      'io.write(select("#", mp.decode(mp.encode(nil, 1, "x"))), "\\n")',
    }, "\n")
    local out = tmp .. "/out"
    local ran = sh("cd " .. q(tmp .. "/elsewhere") .. " && env -u LUA_CPATH -u LUA_CPATH_5_4 lua5.4 -e "
      .. q(prog) .. " >" .. q(out) .. " 2>&1")
    local lines = {}
    for l in slurp(out):gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert(ran, "loading the installed module failed:\n" .. table.concat(lines, "\n"))
    assert.are.equal(tree .. "/lib/lua/5.4/lmp.so", lines[1])
    assert.are.equal("function", lines[2])
    assert.are.equal("3", lines[3])

    -- lmp-busted is installed as a command of the tree
    local help = tmp .. "/help"
    assert(sh("env -u LD_PRELOAD " .. q(tree .. "/bin/lmp-busted") .. " --help >" .. q(help) .. " 2>&1"),
      "lmp-busted --help failed:\n" .. slurp(help))
    assert.truthy(slurp(help):find("Usage: lmp-busted", 1, true), slurp(help))
  end)
end)
