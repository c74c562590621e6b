-- The written API against the module itself: every public function of lmp
-- and every method of its objects is declared in types/lmp.lua (what
-- lua-language-server shows users) and documented in doc/api.md, and
-- neither file names a call the module does not have.
package.cpath = "./?.so;" .. package.cpath

local mp = require "lmp"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read "a"
  f:close()
  return s
end

local function sorted_keys(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  return list
end

local function functions_of(t)
  local set = {}
  for k, v in pairs(t) do
    if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function" then set[k] = true end
  end
  return set
end

-- live method tables, keyed by the class name both files use
local function live_api()
  local api = { mp = functions_of(mp) }
  local p <close> = mp.Process(function() end)
  api.Process = functions_of(getmetatable(p).__methods)
  local pool <close> = mp.Pool(1)
  api.Pool = functions_of(getmetatable(pool).__index)
  local r = pool:apply_async(function() return 1 end)
  api.AsyncResult = functions_of(getmetatable(r).__index)
  r:get()
  pool:close()
  pool:join()
  -- the shared objects (an RLock has a Lock's methods, a BoundedSemaphore a
  -- Semaphore's, SimpleQueue and JoinableQueue a Queue's)
  local a = mp.Pipe()
  for class, obj in pairs({ Queue = mp.Queue(), Connection = a, Lock = mp.Lock(),
    Semaphore = mp.Semaphore(), Event = mp.Event(), Condition = mp.Condition(),
    Barrier = mp.Barrier(2), Value = mp.Value("i"), Array = mp.Array("i", 1) }) do
    api[class] = functions_of(getmetatable(obj).__methods)
  end
  return api
end

-- "function mp.x(" and "function Pool:x(" declarations in types/lmp.lua
local function declared_types(text)
  local api = {}
  for class, name in text:gmatch "\nfunction ([%w_]+)[.:]([%w_]+)%(" do
    api[class] = api[class] or {}
    api[class][name] = true
  end
  return api
end

-- "### mp.x(" and "### pool:x(" headings in doc/api.md, mapped onto classes
local doc_class = { mp = "mp", pool = "Pool", p = "Process", r = "AsyncResult", q = "Queue",
  c = "Connection", l = "Lock", s = "Semaphore", e = "Event", cond = "Condition", b = "Barrier",
  v = "Value", arr = "Array" }
local function declared_doc(text)
  local api = {}
  for obj, name in text:gmatch "\n###%s+`?([%w_]+)[.:]([%w_]+)" do
    local class = doc_class[obj] or obj
    api[class] = api[class] or {}
    api[class][name] = true
  end
  return api
end

local function compare(live, written, what)
  local missing, extra = {}, {}
  for class, names in pairs(live) do
    for _, name in ipairs(sorted_keys(names)) do
      if not (written[class] and written[class][name]) then missing[#missing + 1] = class .. "." .. name end
    end
  end
  for class, names in pairs(written) do
    for _, name in ipairs(sorted_keys(names)) do
      if not (live[class] and live[class][name]) then extra[#extra + 1] = class .. "." .. name end
    end
  end
  table.sort(missing)
  table.sort(extra)
  assert(#missing == 0, what .. " lacks " .. table.concat(missing, ", "))
  assert(#extra == 0, what .. " names calls lmp lacks: " .. table.concat(extra, ", "))
end

describe("the written API", function()
  it("types/lmp.lua declares exactly the functions and methods lmp has", function()
    compare(live_api(), declared_types(read "types/lmp.lua"), "types/lmp.lua")
  end)

  it("doc/api.md documents exactly the functions and methods lmp has", function()
    compare(live_api(), declared_doc(read "doc/api.md"), "doc/api.md")
  end)

  it("_VERSION matches the released rockspec", function()
    local found = false
    for name in io.popen("ls rockspec"):lines() do
      local v = name:match "^lmp%-(%d+%.%d+%.%d+)%-%d+%.rockspec$"
      if v then
        assert.equal(v, mp._VERSION)
        found = true
      end
    end
    assert.is_true(found, "no released rockspec")
  end)
end)
