-- Pool tasks written the way a busted user writes them (API.md "Pool": a
-- task's environment arrives as the receiving process's copy of it; library
-- values travel by name and a worker requires a module it lacks). No
-- `local _ENV = _G` here: every task is defined under busted's own
-- environment, in describe-level locals, before_each pools and file helpers.
package.cpath = "./?.so;" .. package.cpath

local mp = require "lmp"
local support = require "spec.support"

local run_lua, fields = support.run_lua, support.fields

-- a spec-file helper that reaches globals (math) through busted's environment
local function root(x) return math.floor(math.sqrt(x)) end

describe("a pool made in before_each", function()
  local pool
  before_each(function() pool = mp.Pool(2) end)
  after_each(function() pool:terminate() end)

  it("maps a task that uses globals", function()
    assert.same({ 1, 2, 3 }, pool:map(function(x) return math.floor(math.sqrt(x)) end, { 1, 4, 9 }))
  end)

  it("runs a task that calls a spec-file helper", function()
    assert.same({ 2, 3 }, pool:map(function(x) return root(x) end, { 4, 9 }))
    assert.same({ 4 }, pool:map(root, { 16 }))
  end)

  it("runs tasks that use busted's own names (assert, describe's locals)", function()
    local base = 10
    local r = pool:apply(function(x)
      assert(type(x) == "number")
      return base + x
    end, { 5 })
    assert.equal(15, r)
  end)

  it("sends such a task as a small message: the environment goes by reference", function()
    local task = function(x) return math.floor(math.sqrt(x)) + select("#", x) end
    assert.is_true(#mp.encode(task) < 1024, "encoded in " .. #mp.encode(task) .. " bytes")
  end)

  it("keeps the workers' environment apart from the parent's", function()
    pool:map(function() LMP_ENV_SPEC_SET = true end, { 1, 2 })
    assert.is_nil(rawget(_G, "LMP_ENV_SPEC_SET"))
    assert.is_nil(LMP_ENV_SPEC_SET)
  end)
end)

describe("a describe-level pool", function()
  local pool = mp.Pool(2)
  local offset = 100

  it("runs tasks with upvalues of the describe block", function()
    assert.same({ 101, 102 }, pool:map(function(x) return x + offset end, { 1, 2 }))
  end)

  it("runs apply_async with callbacks defined in the spec", function()
    local got
    local r = pool:apply_async(function(a, b) return a * b end, { 6, 7 }, function(v) got = v end)
    assert.equal(42, r:get())
    assert.equal(42, got)
  end)

  it("is closed at the end", function()
    pool:close()
    pool:join()
  end)
end)

describe("a task's environment", function()
  it("is a chunk's own environment (load with env), made before the pool", function()
    local out = run_lua([[
      local env = setmetatable({ factor = 3 }, { __index = _G })
      local chunk = load("local mp = ...\n" ..
        "local pool = mp.Pool(2)\n" ..
        "local r = pool:map(function(x) factor = factor + 1; return x * factor end, {1, 2}, 1)\n" ..
        "pool:terminate()\n" ..
        "return r", "=chunk", "t", env)
      local r = chunk(mp)
      print("r=" .. table.concat(r, ","))
      print("parent=" .. env.factor)
    ]], 30)
    local f = fields(out)
    assert.equal("4,8", f.r, out)        -- each worker counts on from its own copy
    assert.equal("3", f.parent, out)
  end)

  it("is a sandbox made with `local _ENV = ...` before the pool", function()
    local out = run_lua([[
      local pool
      do
        local _ENV = setmetatable({ greeting = "hi" }, { __index = _G })
        pool = mp.Pool(1)
        function task(name) return greeting .. " " .. name end
        print("r=" .. pool:apply(task, { "lmp" }))
      end
      pool:terminate()
    ]], 30)
    assert.equal("hi lmp", fields(out).r, out)
  end)

  it("made after the pool, is copied when it can be", function()
    local out = run_lua([[
      local pool = mp.Pool(1)
      local env = setmetatable({ k = 7 }, { __index = _G })
      local f = load("return function(x) return x * k end", "=late", "t", env)()
      print("r=" .. pool:apply(f, { 6 }))
      pool:terminate()
    ]], 30)
    assert.equal("42", fields(out).r, out)
  end)

  it("made after the pool and impossible to copy, fails with a message that says what to do", function()
    local out = run_lua([[
      local pool = mp.Pool(1)
      local env = setmetatable({ other = mp.Pool(1) }, { __index = _G })
      local f = load("return function(x) return other and x end", "=late", "t", env)()
      local ok, err = pcall(pool.apply, pool, f, { 1 })
      print("ok=" .. tostring(ok))
      print("err=" .. tostring(err):gsub("\n", " "))
      print("len=" .. #tostring(err))
      env.other:terminate()
      pool:terminate()
    ]], 30)
    local f = fields(out)
    assert.equal("false", f.ok, out)
    assert.truthy(f.err:find("environment of task<upvalue _ENV>", 1, true), out)
    assert.truthy(f.err:find("after the pool", 1, true), out)
    assert.truthy(f.err:find("Create the pool after this environment exists, or define the function under _G", 1, true), out)
    assert.is_true(tonumber(f.len) < 400, out)
  end)

  it("holding a global C value assigned after the pool, names that global when the worker lacks it", function()
    -- what a pool made in a busted --helper meets: the spec's values reach a
    -- userdata or C function by its global name, and the worker has no such global
    local out = run_lua([[
      local pool = mp.Pool(1)
      LATE_FN = string.gmatch("a", "a")   -- a C closure, in no module
      local g = LATE_FN
      local ok, err = pcall(pool.apply, pool, function() return type(g) end)
      print("ok=" .. tostring(ok))
      print("err=" .. tostring(err):gsub("\n", " "))
      pool:terminate()
    ]], 30)
    local f = fields(out)
    assert.equal("false", f.ok, out)
    assert.truthy(f.err:find("global LATE_FN is not set in this process", 1, true), out)
    assert.truthy(f.err:find("started before it was assigned", 1, true), out)
  end)
end)

describe("a module the parent required after the pool started", function()
  local dir, modname

  setup(function()
    dir = support.tmpname()
    assert(os.execute("mkdir -p " .. support.q(dir)))
    modname = "lmp_ondemand_" .. mp.getpid()
    local f = assert(io.open(dir .. "/" .. modname .. ".lua", "w"))
    f:write("io.stderr:write('loaded ', (...), '\\n')\n",
      "return { len = string.len, twice = function(x) return 2 * x end }\n")
    f:close()
  end)

  teardown(function()
    os.remove(dir .. "/" .. modname .. ".lua")
    os.remove(dir)
  end)

  it("is required by the worker on demand", function()
    local out = run_lua(([[
      package.path = %q .. "/?.lua;" .. package.path
      local pool = mp.Pool(1)
      local M = require(%q)
      local len = M.len
      print("r=" .. pool:apply(function(s) return M.twice(len(s)) end, { "abc" }))
      print("loaded=" .. tostring(pool:apply(function(name) return package.loaded[name] ~= nil end, { %q })))
      pool:terminate()
    ]]):format(dir, modname, modname), 30)
    local f = fields(out)
    assert.equal("6", f.r, out)
    assert.equal("true", f.loaded, out)
  end)

  it("fails that task with a clear error when the worker cannot load it", function()
    local out = run_lua(([[
      local pool = mp.Pool(1)
      package.path = %q .. "/?.lua;" .. package.path   -- the worker's path lacks it
      local M = require(%q)
      local ok, err = pcall(pool.apply, pool, function(x) return M.twice(x) end, { 1 })
      print("ok=" .. tostring(ok))
      print("err=" .. tostring(err):gsub("\n", " "))
      print("after=" .. pool:apply(function(x) return x + 1 end, { 1 }))
      pool:terminate()
    ]]):format(dir, modname), 30)
    local f = fields(out)
    assert.equal("false", f.ok, out)
    assert.truthy(f.err:find("module " .. modname .. " is not loaded in this process, and require failed", 1, true), out)
    assert.equal("2", f.after, out)
  end)

  it("is never required by mp.decode", function()
    local msg = run_lua(([[
      package.path = %q .. "/?.lua;" .. package.path
      local M = require(%q)
      io.write(mp.encode(M.len, M))
    ]]):format(dir, modname), 30)
    local path = support.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write((msg:gsub("^loaded [^\n]*\n", "")))
    f:close()
    local out = run_lua(([[
      package.path = %q .. "/?.lua;" .. package.path
      local f = assert(io.open(%q, "rb"))
      local s = f:read("a")
      f:close()
      local ok, err = pcall(mp.decode, s, { functions = true })
      print("ok=" .. tostring(ok))
      print("err=" .. tostring(err))
    ]]):format(dir, path), 30)
    os.remove(path)
    local r = fields(out)
    assert.equal("false", r.ok, out)
    assert.truthy(r.err:find("is not loaded in this process", 1, true), out)
    assert.is_nil(out:find("loaded " .. modname, 1, true), out)
  end)
end)
