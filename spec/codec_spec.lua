-- mp.encode / mp.decode / mp.register: the value codec (API.md "Serialization",
-- src/DESIGN.md "Wire format").
package.cpath = "./?.so;" .. package.cpath

local mp = require "lmp"
local support = require "spec.support"

-- Functions here are defined under busted's own environment, as a user's
-- spec would define them: mp.encode sends that environment as the
-- receiver's copy of it (API.md "Pool", src/DESIGN.md "Identity across fork").

local F = { functions = true }

local function roundtrip(...)
  return mp.decode(mp.encode(...), F)
end

local function bits(x)
  return string.pack("<d", x)
end

-- pcall that returns the error message (or fails if the call succeeded), and
-- the same for an error message that must contain a text (spec/support.lua)
local raises, assert_raises_with = support.errmsg, support.assert_error_with
local assert_error_with, run_lua, fields = support.assert_error_with, support.run_lua, support.fields

--[[
Deep comparison that follows table identity: every table of `a` must map to
exactly one table of `b` and back (so shared references and cycles must have
the same shape), floats compare bit for bit (NaN, -0.0), integers and floats
never compare equal to each other. Table keys are not supported (the tests
that use table keys check them by hand).
]]
local function same(a, b, fwd, back, path)
  fwd, back, path = fwd or {}, back or {}, path or "v"
  if type(a) ~= type(b) then
    return false, path .. ": " .. type(a) .. " vs " .. type(b)
  end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then
      return false, path .. ": " .. math.type(a) .. " vs " .. math.type(b)
    end
    if math.type(a) == "float" then
      if bits(a) ~= bits(b) then return false, path .. ": float bits differ" end
      return true
    end
    return a == b, path .. ": " .. tostring(a) .. " vs " .. tostring(b)
  end
  if type(a) ~= "table" then
    return rawequal(a, b), path .. ": values differ"
  end
  if fwd[a] ~= nil or back[b] ~= nil then
    return rawequal(fwd[a], b) and rawequal(back[b], a), path .. ": sharing differs"
  end
  fwd[a], back[b] = b, a
  if getmetatable(a) ~= getmetatable(b) then return false, path .. ": metatable" end
  for k, v in next, a do
    assert(type(k) ~= "table", "same(): table keys are not supported")
    local ok, why = same(v, rawget(b, k), fwd, back, path .. "[" .. tostring(k) .. "]")
    if not ok then return false, why end
  end
  for k in next, b do
    if rawget(a, k) == nil then return false, path .. ": extra key " .. tostring(k) end
  end
  return true
end

local function assert_same(a, b)
  local ok, why = same(a, b)
  assert(ok, why)
end

local function nest(depth)           -- {{{...}}} with `depth` tables
  local t = {}
  for _ = 2, depth do t = { t } end
  return t
end

---------------------------------------------------------------------------
-- The wire format, learnt from the encoder itself (src/DESIGN.md describes
-- it; only the shapes are assumed, never the tag values).
---------------------------------------------------------------------------
local function leb(n)                -- unsigned LEB128 varint, n as uint64
  local out = {}
  repeat
    local b = n & 0x7f
    n = n >> 7
    if n ~= 0 then b = b | 0x80 end
    out[#out + 1] = string.char(b)
  until n == 0
  return table.concat(out)
end

local wire = {}
do
  local e0 = mp.encode()
  wire.header = e0:sub(1, -2)        -- "LMP" 0x01, then the count varint 0
  function wire.body(v)              -- one value's bytes
    return mp.encode(v):sub(#wire.header + 2)
  end
  function wire.msg(count, body)
    return wire.header .. leb(count) .. body
  end
  local s = wire.body("abcdefghijk")   -- longer than 8: a plain string, not
  wire.STR = s:sub(1, -13)           -- a ref-able one; tag, varint length, bytes
  local t = wire.body({})
  wire.TAB = t:sub(1, -3)            -- table tag, array count 0, hash count 0
  local shared = {}
  local two = mp.encode(shared, shared)
  local refbytes = two:sub(#mp.encode(shared) + 1)
  wire.REF = refbytes:sub(1, -2)     -- ref tag, then the varint id
  wire.TABR = two:sub(#wire.header + 2, #wire.header + 2)   -- a table referred to later
  wire.firstref = refbytes:byte(-1)  -- id of the first table in a message
  wire.NIL = wire.body(nil)
  -- a short string key is sent once (its tag gives it a ref id), then as a ref
  local k = wire.body({ k = 1 })
  wire.SKEY = k:sub(4, 4)             -- after TAB, array count, hash count
end

describe("mp.encode (wire format)", function()
  it("starts every message with the versioned header LMP 0x01", function()
    assert.are.equal("LMP\1", mp.encode():sub(1, 4))
    assert.are.equal("LMP\1", mp.encode(1, "x", {}):sub(1, 4))
  end)

  it("sends a repeated key or tiny string once, then a back-reference", function()
    local one = #mp.encode({ "ab" })
    local many = #mp.encode({ "ab", "ab", "ab", "ab" })
    assert.is_true(many - one <= 3 * #wire.body(1), "repeats cost a short ref each")
    local rt = mp.decode(mp.encode({ "ab", { ab = "ab" }, "ab" }))
    assert.are.same({ "ab", { ab = "ab" }, "ab" }, rt)
    local long = string.rep("y", 9)
    assert.is_true(#mp.encode({ long, long }) >= 2 * 9, "longer values are sent each time")
  end)

  it("uses the varints and table layout src/DESIGN.md describes (the hostile tests rely on it)", function()
    local long = string.rep("x", 300)
    assert.are.equal(wire.STR .. leb(300) .. long, wire.body(long))
    assert.are.equal(wire.TAB .. "\1\0" .. wire.TAB .. "\0\0", wire.body({ {} }))
    assert.are.equal(wire.TAB .. "\0\1" .. wire.SKEY .. "\1k" .. wire.TAB .. "\0\0",
      wire.body({ k = {} }))
    -- its second use is a back-reference (ids: outer 1, first inner 2, "k" 3)
    local zero = wire.body(0)
    assert.are.equal(wire.TAB .. "\2\0" .. wire.TAB .. "\0\1" .. wire.SKEY .. "\1k" .. zero
      .. wire.TAB .. "\0\1" .. wire.REF .. "\3" .. zero,
      wire.body({ { k = 0 }, { k = 0 } }))
  end)
end)

---------------------------------------------------------------------------
describe("mp.encode (tables referred to again)", function()
  it("marks only them, so the decoder keeps only them for back-references", function()
    assert.are_not.equal(wire.TAB, wire.TABR)
    local shared = {}
    assert.are.equal(wire.TABR .. "\0\0" .. wire.REF .. leb(wire.firstref),
      mp.encode(shared, shared):sub(#wire.header + 2))
    -- an unmarked table cannot be referred to
    local err = raises(mp.decode, wire.msg(2, wire.TAB .. "\0\0" .. wire.REF .. leb(wire.firstref)))
    assert.truthy(err:find("lmp: decode: bad reference", 1, true), err)
    local a, b = mp.decode(wire.msg(2, wire.TABR .. "\0\0" .. wire.REF .. leb(wire.firstref)))
    assert.is_true(rawequal(a, b))
  end)

  it("keeps them right inside tables whose key count outgrows its first byte", function()
    -- more than 127 keys: the count is widened once the body is written,
    -- which moves every table inside it
    local function big(tag)
      local t = { tag }
      for i = 1, 300 do t["k" .. i] = { i, tag } end
      return t
    end
    local inner, outer = big("inner"), big("outer")
    outer.inner = inner
    inner.k150.back = inner.k7          -- a reference inside the moved bytes
    local v = { outer, inner.k7, inner.k300, outer.k1, inner, outer.k299 }
    local back = mp.decode(mp.encode(v))
    local ok, why = same(v, back)
    assert(ok, why)
    assert.is_true(rawequal(back[2], back[1].inner.k7))
    assert.is_true(rawequal(back[2], back[5].k150.back))
    assert.is_true(rawequal(back[6], back[1].k299))
    -- as separate values of one message, twice over
    local x, y, z = mp.decode(mp.encode(outer, inner.k7, outer))
    assert.is_true(rawequal(y, x.inner.k7))
    assert.is_true(rawequal(x, z))
  end)
end)

describe("mp.encode", function()
  it("returns a string for any number of arguments, including none", function()
    assert.are.equal("string", type(mp.encode()))
    assert.are.equal("string", type(mp.encode(nil)))
    assert.are.equal("string", type(mp.encode(1, 2, 3, {}, "x")))
  end)

  it("refuses a table nested 10^6 levels deep with an lmp: error instead of overflowing the C stack", function()
    local err = raises(mp.encode, nest(10 ^ 6))
    assert.are.equal("string", type(err))
    assert.are.equal("lmp:", err:sub(1, 4))
  end)

  it("encodes a table nested 900 levels deep", function()
    local t = roundtrip(nest(900))
    local depth = 0
    while t do depth, t = depth + 1, t[1] end
    assert.are.equal(900, depth)
  end)

  it("round-trips 300 levels of closures, custom and metatable'd tables in one value", function()
    -- every kind of nesting the stack checks cover, stacked deep
    local Box = mp.register("lmp.spec.deepbox", { __index = { kind = "box" } })
    local Wrap = { __serialize = function(w) return { w.inner } end,
                   __deserialize = function(t) return { inner = t[1], rebuilt = true } end }
    mp.register("lmp.spec.deepwrap", Wrap)
    local v = "bottom"
    for i = 1, 300 do
      local inner = v
      if i % 3 == 0 then v = setmetatable({ inner }, Box)
      elseif i % 3 == 1 then v = function() return inner end
      else v = setmetatable({ inner = inner }, Wrap) end
    end
    local got = mp.decode(mp.encode(v), { functions = true })
    local depth = 0
    while type(got) ~= "string" do
      depth = depth + 1
      if type(got) == "function" then got = got()
      elseif got.rebuilt then got = got.inner
      else assert.are.equal("box", got.kind); got = got[1] end
    end
    assert.are.equal(300, depth)
    assert.are.equal("bottom", got)
  end)

  describe("on a value it cannot serialize", function()
    it("names a userdata argument by its path", function()
      local f = io.tmpfile()
      local err = raises(mp.encode, 1, { conn = f })
      f:close()
      assert.truthy(err:find("lmp: cannot serialize userdata at args[2].conn", 1, true), err)
    end)

    it("names a thread nested in arrays by its path", function()
      local err = raises(mp.encode, { 1, { 2, 3, coroutine.create(print) } })
      assert.truthy(err:find("lmp: cannot serialize thread at args[1][2][3]", 1, true), err)
    end)

    it("quotes keys that are not identifiers", function()
      local err = raises(mp.encode, { ["a b"] = coroutine.create(print) })
      assert.truthy(err:find('cannot serialize thread at args[1]["a b"]', 1, true), err)
    end)

    it("names an upvalue by its name", function()
      local co = coroutine.create(print)
      local err = raises(mp.encode, function() return co end)
      assert.truthy(err:find("cannot serialize thread at args[1]<upvalue co>", 1, true), err)
    end)

    it("says when the bad value is a table key", function()
      local err = raises(mp.encode, { [coroutine.create(print)] = 1 })
      assert.truthy(err:find("cannot serialize thread at args[1]", 1, true), err)
      assert.truthy(err:find("<key>", 1, true), err)
    end)

    it("refuses a C function that is not a library value", function()
      for _, f in ipairs({ coroutine.wrap(function() end), (string.gmatch("a", "a")) }) do
        local err = raises(mp.encode, f)
        assert.truthy(err:find("lmp: cannot serialize ", 1, true), err)
        assert.truthy(err:find("function", 1, true), err)
        assert.truthy(err:find("at args[1]", 1, true), err)
      end
    end)

    it("names the path of a bad value inside an unregistered metatable", function()
      local err = raises(mp.encode, { x = setmetatable({}, { __index = io.tmpfile() }) })
      assert.truthy(err:find("lmp: cannot serialize userdata at args[1].x<metatable>.__index", 1, true), err)
    end)
  end)
end)

---------------------------------------------------------------------------
describe("mp.decode", function()
  describe("round-trips scalars exactly:", function()
    it("keeps nils and the number of values", function()
      assert.are.equal(3, select("#", mp.decode(mp.encode(nil, 1, nil))))
      assert.are.equal(0, select("#", mp.decode(mp.encode())))
      assert.are.equal(1, select("#", mp.decode(mp.encode(nil))))
      local a, b, c = mp.decode(mp.encode(nil, 1, nil))
      assert.is_nil(a); assert.are.equal(1, b); assert.is_nil(c)
      local many = {}
      for i = 1, 200 do many[i] = (i % 3 ~= 0) and i or nil end
      local back = table.pack(mp.decode(mp.encode(table.unpack(many, 1, 200))))
      assert.are.equal(200, back.n)
      for i = 1, 200 do assert.are.equal(many[i], back[i]) end
    end)

    it("keeps booleans", function()
      local t, f = mp.decode(mp.encode(true, false))
      assert.are.equal(true, t)
      assert.are.equal(false, f)
    end)

    it("keeps 64-bit integers and their subtype", function()
      for _, n in ipairs({ 0, 1, -1, 127, 128, -128, 255, 256, 2 ^ 31 | 0, -(2 ^ 31 | 0),
                           (2 ^ 53 | 0) + 1, math.maxinteger, math.mininteger,
                           math.maxinteger - 1, math.mininteger + 1 }) do
        local back = mp.decode(mp.encode(n))
        assert.are.equal("integer", math.type(back))
        assert.are.equal(n, back)
      end
    end)

    it("keeps floats bit for bit and their subtype", function()
      local subnormal = string.unpack("<d", "\1\0\0\0\0\0\0\0")
      local big_sub = string.unpack("<d", "\255\255\255\255\255\255\15\0")
      for _, x in ipairs({ 0.0, 1.0, -1.0, 0.5, math.pi, 2.0 ^ 63, -2.0 ^ 63, 1e308,
                           -1e-308, subnormal, -subnormal, big_sub, math.huge, -math.huge,
                           2.0 ^ 53 + 2, 3.0 }) do
        local back = mp.decode(mp.encode(x))
        assert.are.equal("float", math.type(back))
        assert.are.equal(bits(x), bits(back))
      end
    end)

    it("keeps -0.0 negative", function()
      local z = mp.decode(mp.encode(-0.0))
      assert.are.equal("float", math.type(z))
      assert.are.equal(-math.huge, 1 / z)
      assert.are.equal(math.huge, 1 / mp.decode(mp.encode(0.0)))
    end)

    it("keeps infinities and NaN", function()
      local inf, ninf, nan = mp.decode(mp.encode(math.huge, -math.huge, 0 / 0))
      assert.are.equal(math.huge, inf)
      assert.are.equal(-math.huge, ninf)
      assert.is_true(nan ~= nan)
      local payload = string.unpack("<d", "\1\0\0\0\0\0\248\127")  -- NaN with a payload
      assert.are.equal(bits(payload), bits(mp.decode(mp.encode(payload))))
    end)

    it("keeps binary strings with zero bytes and every byte value", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      for _, s in ipairs({ "", "\0", "a\0b", all, all:reverse(), all:rep(3) }) do
        assert.are.equal(s, mp.decode(mp.encode(s)))
      end
    end)

    it("keeps a 10 MiB string", function()
      local s = string.rep("\0\1lmp\255", 10 * 1024 * 1024 // 6) .. "end"
      local back = mp.decode(mp.encode(s))
      assert.are.equal(#s, #back)
      assert.is_true(s == back)
    end)
  end)

  describe("round-trips tables:", function()
    it("keeps an empty table", function()
      local t = mp.decode(mp.encode({}))
      assert.are.equal("table", type(t))
      assert.is_nil(next(t))
    end)

    it("keeps arrays, holes and hash parts together", function()
      local t = { 1, 2.5, "three", false, x = 1, y = { z = "w" }, [10] = 10, [-3] = "neg" }
      assert_same(t, roundtrip(t))
      local holes = { 1, nil, 3, nil, nil, 6 }
      local back = roundtrip(holes)
      for i = 1, 6 do assert.are.equal(holes[i], back[i]) end
    end)

    it("keeps boolean and float keys", function()
      local t = { [true] = "t", [false] = "f", [1.5] = "x", [-0.25] = "y", [math.huge] = "inf",
                  [-math.huge] = "-inf", [2 ^ 63] = "big" }
      local back = roundtrip(t)
      assert_same(t, back)
      for k in pairs(back) do
        if type(k) == "number" then assert.are.equal("float", math.type(k)) end
      end
    end)

    it("keeps tables used as keys, with their identity", function()
      local k1, k2 = { "k1" }, { "k2" }
      local t = { [k1] = "one", [k2] = "two", keys = { k1, k2 } }
      local back = roundtrip(t)
      local b1, b2 = back.keys[1], back.keys[2]
      assert.are.equal("k1", b1[1])
      assert.are.equal("one", back[b1])
      assert.are.equal("two", back[b2])
      local n = 0
      for _ in pairs(back) do n = n + 1 end
      assert.are.equal(3, n)
    end)

    it("keeps a table key that is also the value", function()
      local k = { 1 }
      local back = roundtrip({ [k] = k })
      local key, value = next(back)
      assert.are.equal("table", type(key))
      assert.is_true(rawequal(key, value))
      assert.are.equal(1, key[1])
    end)

    it("keeps nested tables", function()
      local t = { a = { b = { c = { d = { 1, 2, { 3, { 4 } } } } } } }
      assert_same(t, roundtrip(t))
    end)

    it("keeps shared references within one message", function()
      local s = { "shared" }
      local back = roundtrip({ a = s, b = s, list = { s, s } })
      assert.is_true(rawequal(back.a, back.b))
      assert.is_true(rawequal(back.a, back.list[1]))
      assert.is_true(rawequal(back.a, back.list[2]))
      local x, y = roundtrip(s, s)
      assert.is_true(rawequal(x, y))
      assert.is_false(rawequal(x, s))
    end)

    it("keeps cycles", function()
      local t = { name = "t" }
      t.self = t
      local a, b = { name = "a" }, { name = "b" }
      a.b, b.a = b, a
      local back, ab = roundtrip(t, a)
      assert.is_true(rawequal(back, back.self))
      assert.is_true(rawequal(ab, ab.b.a))
      assert.are.equal("b", ab.b.name)
    end)
  end)

  describe("round-trips functions:", function()
    it("keeps a plain function", function()
      local f = roundtrip(function(x, y) return x * y + 1 end)
      assert.are.equal("function", type(f))
      assert.are.equal(7, f(2, 3))
    end)

    it("keeps a function without upvalues", function()
      local f = roundtrip(function() return 42 end)
      assert.is_nil(debug.getupvalue(f, 1))
      assert.are.equal(42, f())
    end)

    it("copies upvalues by value: numbers, strings and tables", function()
      local n, s, t = 10, "str", { 1, 2, k = "v" }
      local function f() return n, s, t end
      local g = roundtrip(f)
      local gn, gs, gt = g()
      assert.are.equal(10, gn)
      assert.are.equal("str", gs)
      assert_same(t, gt)
      assert.is_false(rawequal(t, gt))
      t.k = "changed"
      local _, _, gt2 = g()
      assert.are.equal("v", gt2.k)
    end)

    it("keeps a recursive local function", function()
      local function fib(n)
        if n < 2 then return n end
        return fib(n - 1) + fib(n - 2)
      end
      local g = roundtrip(fib)
      assert.are.equal(55, g(10))
      local name, value = debug.getupvalue(g, 1)
      assert.are.equal("fib", name)
      assert.is_true(rawequal(g, value))
    end)

    it("keeps two closures that share an upvalue sharing it", function()
      local function counter()
        local n = 0
        return function() n = n + 1; return n end, function() return n end
      end
      local inc, get = counter()
      inc()
      local inc2, get2 = roundtrip(inc, get)
      assert.are.equal(1, get2())
      inc2(); inc2()
      assert.are.equal(3, get2())
      assert.are.equal(1, get())             -- the originals are not touched
      local box = roundtrip({ inc = inc, get = get })
      box.inc()
      assert.are.equal(2, box.get())
    end)

    it("rebinds _ENV to the receiver's globals even when it is not upvalue 1", function()
      local a = 1
      local f
      do
        -- the one function in lmp's specs defined under the real globals
        -- (busted gives a spec file an environment of its own)
        local _ENV = _G
        f = function() return a + math.abs(-1) + (LMP_SPEC_GLOBAL or 0) end
      end
      assert.are.equal("a", (debug.getupvalue(f, 1)))
      assert.are.equal("_ENV", (debug.getupvalue(f, 2)))
      local g = roundtrip(f)
      assert.are.equal(2, g())
      _G.LMP_SPEC_GLOBAL = 40
      local ok, r = pcall(g)
      _G.LMP_SPEC_GLOBAL = nil
      assert.is_true(ok, r)
      assert.are.equal(42, r)
      local name, env = debug.getupvalue(g, 2)
      assert.are.equal("_ENV", name)
      assert.is_true(rawequal(_G, env))
    end)

    it("sends the globals table itself by name", function()
      assert.is_true(rawequal(_G, (roundtrip(_G))))
    end)

    it("sends library values captured as upvalues by name", function()
      local fmt, mp2, out = string.format, mp, io.stdout
      local function f(x) return fmt("<%d>", x), mp2, out end
      local g = roundtrip(f)
      local s, m, o = g(5)
      assert.are.equal("<5>", s)
      assert.is_true(rawequal(mp, m))
      assert.is_true(rawequal(io.stdout, o))
      assert.is_true(rawequal(string.format, (roundtrip(string.format))))
      assert.is_true(rawequal(io.stdout, (roundtrip(io.stdout))))
      assert.is_true(rawequal(string, (roundtrip(string))))
      assert.is_true(rawequal(mp, (roundtrip(mp))))
    end)

    it("sends a custom _ENV table (a sandbox) as the receiver's copy of it", function()
      local function make()
        local _ENV = { x = 5, y = { 6 } }
        return function() return x + y[1] end
      end
      local f = make()
      local g = roundtrip(f)
      assert.are.equal(11, g())
      local name, env = debug.getupvalue(g, 1)
      assert.are.equal("_ENV", name)
      assert.is_false(rawequal(_G, env))
      -- in the same process, that copy is the sandbox itself
      assert.is_true(rawequal(select(2, debug.getupvalue(f, 1)), env))
    end)

    it("keeps debug info, so errors and tracebacks name the source file and line", function()
      local function boom() error("kaboom") end local line = debug.getinfo(1, "l").currentline
      local g = roundtrip(boom)
      local ok, err = pcall(g)
      assert.is_false(ok)
      assert.truthy(err:find("codec_spec.lua:" .. line .. ": kaboom", 1, true), err)
      local _, tb = xpcall(g, debug.traceback)
      assert.truthy(tb:find("codec_spec.lua:" .. line, 1, true), tb)
      local info = debug.getinfo(g, "S")
      assert.are.equal(debug.getinfo(boom, "S").source, info.source)
      assert.are.equal(line, info.linedefined)
    end)

    it("refuses functions unless opts.functions is true", function()
      local s = mp.encode({ f = function() return 1 end })
      assert_raises_with("lmp: decode: message contains a function", mp.decode, s)
      assert_raises_with("lmp: decode: message contains a function", mp.decode, s, {})
      assert_raises_with("lmp: decode: message contains a function", mp.decode, s, { functions = false })
      assert.are.equal(1, mp.decode(s, { functions = true }).f())
    end)
  end)

  describe("round-trips metatables:", function()
    it("gives a table with a registered metatable that metatable back", function()
      local Rect = { __index = {} }
      function Rect.__index.area(r) return r.w * r.h end
      mp.register("spec.codec.Rect", Rect)
      local r = setmetatable({ w = 2, h = 3 }, Rect)
      local back, again = roundtrip(r, { r })
      assert.is_true(rawequal(Rect, getmetatable(back)))
      assert.are.equal(6, back:area())
      assert.is_true(rawequal(back, again[1]))
    end)

    it("keeps one table per name: registering again replaces the old pair", function()
      local Old, New = { kind = "old" }, { kind = "new" }
      assert.is_true(rawequal(Old, mp.register("spec.codec.Again", Old)))
      mp.register("spec.codec.Again", New)
      local back = roundtrip(setmetatable({}, New))
      assert.is_true(rawequal(New, getmetatable(back)))
      -- the old table is no longer registered: it travels by value
      back = roundtrip(setmetatable({}, Old))
      assert.is_false(rawequal(Old, getmetatable(back)))
      assert.are.equal("old", getmetatable(back).kind)
      -- and a table moved to another name travels under that name only
      mp.register("spec.codec.Moved", New)
      back = roundtrip(setmetatable({}, New))
      assert.is_true(rawequal(New, getmetatable(back)))
      assert_raises_with("metatable 'spec.codec.Again' is not registered",
                         mp.decode, (mp.encode(setmetatable({}, New)):gsub("Moved", "Again")))
    end)

    it("encodes a value with __serialize as what __serialize returns", function()
      local mt = { __serialize = function(self) return { x = self.x } end }
      local v = setmetatable({ x = 1, cache = coroutine.create(print) }, mt)
      local back = roundtrip({ v = v })
      assert.is_nil(getmetatable(back.v))
      assert_same({ x = 1 }, back.v)
      local str = setmetatable({}, { __serialize = function() return "as a string" end })
      assert.are.equal("as a string", (roundtrip(str)))
    end)

    it("rebuilds a __serialize value with __deserialize when the metatable is registered", function()
      local Handle = {}
      Handle.__index = Handle
      function Handle.__serialize(h) return { path = h.path } end
      function Handle.__deserialize(r) return setmetatable({ path = r.path, reopened = true }, Handle) end
      mp.register("spec.codec.Handle", Handle)
      local h = setmetatable({ path = "/tmp/x", fd = io.tmpfile() }, Handle)
      local back = roundtrip(h)
      h.fd:close()
      assert.is_true(rawequal(Handle, getmetatable(back)))
      assert.are.equal("/tmp/x", back.path)
      assert.is_true(back.reopened)
      assert.is_nil(back.fd)
    end)
  end)

  describe("on malformed input", function()
    local function assert_decode_error(s, opts)
      local ok, err = pcall(mp.decode, s, opts)
      assert(not ok, ("decoding %q succeeded"):format(s:sub(1, 60)))
      assert(type(err) == "string", "error is not a string")
      assert(err:find("lmp: decode", 1, true), err)
      return err
    end

    local function sample_messages()
      local shared = { "shared" }
      local cyc = {}
      cyc.self = cyc
      local up = { 1, 2 }
      local f = function() return up, shared end
      return {
        mp.encode(nil, true, false, 0, -1, math.maxinteger, math.mininteger, 1.5, -0.0, 0 / 0,
          "", "some string", string.rep("z", 200)),
        mp.encode({ 1, 2, 3, x = { y = { z = "deep" } }, [1.5] = true, [false] = shared, s = shared }),
        mp.encode(cyc, shared, { shared, cyc }),
        mp.encode(f, f, { g = f }),
      }
    end

    it("raises on every truncation of a valid message", function()
      for _, s in ipairs(sample_messages()) do
        for i = 0, #s - 1 do
          assert_decode_error(s:sub(1, i), F)
        end
      end
    end)

    it("decodes or raises lmp: on thousands of random byte changes, never crashing", function()
      math.randomseed(7)
      local msgs = sample_messages()
      msgs[#msgs] = nil                    -- no bytecode: corrupt bytecode is unsafe in any Lua
      local failures = 0
      for _ = 1, 4000 do
        local s = msgs[math.random(#msgs)]
        local bytes = { s:byte(1, -1) }
        for _ = 1, math.random(1, 3) do
          bytes[math.random(#bytes)] = math.random(0, 255)
        end
        local ok, err = pcall(mp.decode, string.char(table.unpack(bytes)))
        if not ok then
          failures = failures + 1
          assert(type(err) == "string" and err:sub(1, 4) == "lmp:", tostring(err))
        end
      end
      assert.is_true(failures > 0)
    end)

    it("decodes or raises lmp: for every single-byte value", function()
      for b = 0, 255 do
        local ok, err = pcall(mp.decode, wire.msg(1, string.char(b)))
        if not ok then assert(err:sub(1, 4) == "lmp:", err) end
        ok, err = pcall(mp.decode, wire.msg(1, string.char(b) .. "\0\0\0"))
        if not ok then assert(err:sub(1, 4) == "lmp:", err) end
      end
    end)

    it("raises on a huge declared string length", function()
      for _, n in ipairs({ 4, 2 ^ 31, 2 ^ 40, 2 ^ 62, math.maxinteger, -1 }) do
        assert_decode_error(wire.msg(1, wire.STR .. leb(n) .. "abc"))
      end
      assert_decode_error(wire.msg(1, wire.STR .. string.rep("\255", 11) .. "\1abc"))
    end)

    it("raises on huge table counts", function()
      for _, n in ipairs({ 2, 2 ^ 31, 2 ^ 40, 2 ^ 62, -1 }) do
        assert_decode_error(wire.msg(1, wire.TAB .. leb(n) .. "\0" .. wire.NIL))
        assert_decode_error(wire.msg(1, wire.TAB .. "\0" .. leb(n) .. wire.NIL .. wire.NIL))
      end
    end)

    it("raises on a huge value count", function()
      for _, n in ipairs({ 2, 2 ^ 20, 2 ^ 40, -1 }) do
        assert_decode_error(wire.msg(n, wire.NIL))
      end
    end)

    it("raises on a nil or NaN table key, however the key is written", function()
      local nan = wire.body(0 / 0)
      local one = wire.body(1)
      assert.truthy(assert_decode_error(wire.msg(1, wire.TAB .. "\0\1" .. wire.NIL .. one)):find("nil table key", 1, true))
      assert.truthy(assert_decode_error(wire.msg(1, wire.TAB .. "\0\1" .. nan .. one)):find("NaN table key", 1, true))
      -- the same keys, arriving with a table value after them
      assert.truthy(assert_decode_error(wire.msg(1, wire.TAB .. "\0\1" .. nan .. wire.TAB .. "\0\0")):find("NaN table key", 1, true))
      -- while integer, string and back-referenced table keys decode
      local t = {}
      local got = mp.decode(mp.encode({ [t] = 1, [3.5] = 2, k = 3, [-7] = 4, [true] = 5, t }))
      assert.are.same({ 2, 3, 4, 5 }, { got[3.5], got.k, got[-7], got[true] })
      assert.are.equal(1, got[got[1]])
    end)

    it("raises on dangling back-references", function()
      local first = wire.firstref
      assert_decode_error(wire.msg(1, wire.REF .. leb(first)))
      assert_decode_error(wire.msg(1, wire.REF .. leb(0)))
      assert_decode_error(wire.msg(1, wire.REF .. leb(5)))
      assert_decode_error(wire.msg(2, wire.TAB .. "\0\0" .. wire.REF .. leb(first + 1)))
      assert_decode_error(wire.msg(1, wire.REF .. leb(2 ^ 40)))
      assert_decode_error(wire.msg(1, wire.REF .. leb(-1)))
    end)

    it("raises cleanly on a message nested 10^6 levels deep", function()
      -- learn the bytes one more level of nesting adds
      local e2, e3, e4 = mp.encode(nest(2)), mp.encode(nest(3)), mp.encode(nest(4))
      local L = #e3 - #e2
      local cut, unit
      for i = #wire.header + 1, #e2 do
        local u = e3:sub(i + 1, i + L)
        if e3 == e2:sub(1, i) .. u .. e2:sub(i + 1)
           and e4 == e2:sub(1, i) .. u .. u .. e2:sub(i + 1) then
          cut, unit = i, u
          break
        end
      end
      assert(cut, "could not find the repeating unit of nested tables")
      local function deep(n) return e2:sub(1, cut) .. unit:rep(n - 2) .. e2:sub(cut + 1) end
      assert.are.equal(mp.encode(nest(900)), deep(900))
      local t, depth = mp.decode(deep(900)), 0
      while t do depth, t = depth + 1, t[1] end
      assert.are.equal(900, depth)
      assert_decode_error(deep(10 ^ 6))
      -- the same through hash parts
      local h = {}
      for _ = 1, 3 do h = { k = h } end
      local hs = mp.encode(h)
      local first = wire.TAB .. "\0\1" .. wire.SKEY .. "\1k"   -- table id 1, "k" id 2
      local tagk = wire.TAB .. "\0\1" .. wire.REF .. "\2"
      local hdr = wire.header .. "\1"
      assert.are.equal(hdr .. first .. tagk:rep(2) .. wire.TAB .. "\0\0", hs)
      assert_decode_error(hdr .. first .. tagk:rep(10 ^ 6) .. wire.TAB .. "\0\0")
    end)

    it("raises with a message naming the version on a bad version or magic", function()
      local good = mp.encode(1)
      for _, v in ipairs({ 0, 2, 255 }) do
        local err = assert_decode_error(good:sub(1, 3) .. string.char(v) .. good:sub(5))
        assert.truthy(err:find("version", 1, true), err)
      end
      assert_decode_error("XYZ" .. good:sub(4))
      assert_decode_error("")
      assert_decode_error("LMP")
    end)

    it("raises on trailing bytes", function()
      assert_decode_error(mp.encode(1) .. "\0")
      assert_decode_error(mp.encode() .. wire.NIL)
      assert_decode_error(mp.encode({}) .. "garbage")
    end)

    it("raises on a registered-metatable name the receiver does not know", function()
      local M = {}
      mp.register("spec.codec.Aaaa", M)
      local s = mp.encode(setmetatable({}, M))
      local forged, n = s:gsub("spec%.codec%.Aaaa", "spec.codec.Zzzz")
      assert.are.equal(1, n)
      local ok, err = pcall(mp.decode, forged)
      assert.is_false(ok)
      assert.are.equal("lmp:", err:sub(1, 4))
    end)

    it("raises on arguments that are not strings", function()
      for _, bad in ipairs({ 1, {}, true }) do
        assert.is_false((pcall(mp.decode, bad)))
      end
      assert.is_false((pcall(mp.decode)))
    end)
  end)

  it("round-trips 500 random nested values to deeply equal values", function()
    math.randomseed(42)
    local specials = { 0.0, -0.0, math.huge, -math.huge, 0 / 0, math.maxinteger, math.mininteger,
                       string.unpack("<d", "\1\0\0\0\0\0\0\0") }
    local gen
    local function scalar()
      local r = math.random(8)
      if r == 1 then return math.random(2) == 1
      elseif r == 2 then return math.random(-1000, 1000)
      elseif r == 3 then return math.random(0)                           -- any 64-bit integer
      elseif r == 4 then return (string.unpack("<d", string.pack("<i8", math.random(0))))
      elseif r == 5 then return specials[math.random(#specials)]
      elseif r == 6 then return math.random() * 1e6
      else
        local n = math.random(0, 40)
        local b = {}
        for i = 1, n do b[i] = math.random(0, 255) end
        return string.char(table.unpack(b))
      end
    end
    local function key()
      local k
      repeat k = scalar() until k == k                                    -- no NaN keys
      return k
    end
    function gen(depth, pool)
      local r = math.random(10)
      if r == 1 then return nil end
      if depth > 4 or r <= 5 then return scalar() end
      if r == 6 and #pool > 0 then return pool[math.random(#pool)] end   -- sharing and cycles
      local t = {}
      pool[#pool + 1] = t
      for i = 1, math.random(0, 6) do t[i] = gen(depth + 1, pool) end
      for _ = 1, math.random(0, 4) do t[key()] = gen(depth + 1, pool) end
      return t
    end
    for i = 1, 500 do
      local pool = {}
      local v, w = gen(0, pool), gen(0, pool)
      local s = mp.encode(v, w)
      local n = select("#", mp.decode(s))
      assert.are.equal(2, n)
      local bv, bw = mp.decode(s)
      local ok, why = same({ v, w }, { bv, bw })
      assert(ok, ("value %d: %s"):format(i, why))
    end
  end)
end)

---------------------------------------------------------------------------
describe("mp.register", function()
  it("raises on bad arguments", function()
    for _, args in ipairs({ {}, { "name", 1 }, { {}, {} }, { nil, {} }, { true, {} } }) do
      assert.is_false((pcall(mp.register, table.unpack(args, 1, 2))))
    end
  end)

  it("makes tables with that metatable arrive with it; others bring a copy", function()
    local A, B = {}, { __index = { hello = function(self) return "hi " .. self[1] end } }
    mp.register("spec.codec.A", A)
    local a = roundtrip(setmetatable({ 1 }, A))
    assert.is_true(rawequal(A, getmetatable(a)))
    local b = roundtrip(setmetatable({ "you" }, B))
    assert.is_false(rawequal(B, getmetatable(b)))
    assert.equal("hi you", b:hello())
  end)

  it("copies an unregistered metatable once per message, with cycles", function()
    local C = {}
    C.__index = C
    function C.get(self) return self.v end
    local x, y = setmetatable({ v = 1 }, C), setmetatable({ v = 2 }, C)
    local x2, y2 = roundtrip(x, y)
    assert.is_true(rawequal(getmetatable(x2), getmetatable(y2)))
    assert.is_true(rawequal(getmetatable(x2), getmetatable(x2).__index))
    assert.equal(1, x2:get())
    assert.equal(2, y2:get())
  end)

  it("lets a function whose _ENV is a proxy of the globals run after decoding", function()
    local env = setmetatable({ extra = 41 }, { __index = _G })
    local f = load("return extra + math.abs(-1)", "=proxy", "t", env)
    assert.equal(42, roundtrip(f)())
  end)
end)

describe("mp.encode (review regressions)", function()
  it("keeps library values right when __serialize loads a module and encodes", function()
    local mt = { __serialize = function()
      package.loaded["spec_codec_new_module"] = {}
      mp.encode({})
      collectgarbage()
      return {}
    end }
    local t = mp.decode(mp.encode({ string.format, setmetatable({}, mt), string.rep, io.stdout }))
    package.loaded["spec_codec_new_module"] = nil
    assert.is_true(t[1] == string.format and t[3] == string.rep and t[4] == io.stdout)
  end)

  it("does not preallocate what a hostile message claims in nested tables", function()
    local function varint(v)
      local s = {}
      repeat
        local b = v % 128
        v = v // 128
        if v > 0 then b = b + 128 end
        s[#s + 1] = string.char(b)
      until v == 0
      return table.concat(s)
    end
    local depth, pad, after, heads = 900, 100000, 100000, {}
    for d = depth, 1, -1 do
      heads[d] = "\6" .. varint(after) .. "\0"
      after = after + #heads[d]
    end
    local msg = "LMP\1\1" .. table.concat(heads) .. string.rep("\0", pad)
    collectgarbage()
    local before = collectgarbage("count")
    local err = raises(mp.decode, msg)
    assert.truthy(err:find("lmp: decode", 1, true), err)
    -- 900 levels each claiming ~100k slots would have been gigabytes
    assert.is_true(collectgarbage("count") - before < 64 * 1024)
  end)
end)

describe("mp.encode (library values)", function()
  it("notices a module replaced in package.loaded (same number of modules)", function()
    local a, b = { name = "a" }, { name = "b" }
    package.loaded["spec_codec_swap"] = a
    assert.is_true(rawequal(a, (mp.decode(mp.encode(a)))))
    package.loaded["spec_codec_swap"] = b
    assert.is_true(rawequal(b, (mp.decode(mp.encode(b)))))
    package.loaded["spec_codec_swap"] = nil
  end)
end)

describe("mp.encode / mp.decode (second review)", function()
  it("keeps identity when the collector runs inside a __serialize", function()
    -- tables only a weak cache holds were freed mid-message and their
    -- addresses taken for new ones, which then came back as the old tables
    local Obj = { __serialize = function(self)
      collectgarbage()
      return { v = self.v }
    end }
    local bad = 0
    for _ = 1, 100 do
      local cache = setmetatable({}, { __mode = "v" })
      for i = 1, 50 do cache[i] = { i } end
      local list = { cache }
      for i = 1, 50 do list[#list + 1] = setmetatable({ v = i }, Obj) end
      local d = mp.decode(mp.encode(list))
      for i = 2, #d do
        if type(d[i]) ~= "table" or d[i].v ~= i - 1 then bad = bad + 1 end
      end
    end
    assert.are.equal(0, bad)
  end)

  it("keeps apart short strings that __serialize makes, even when it collects", function()
    -- a string replacement was freed once written, the next one could get
    -- its address and went out as a reference to it
    local Obj = { __serialize = function(self)
      collectgarbage()
      return "v" .. self.i
    end }
    local t = {}
    for i = 1, 20 do t[i] = setmetatable({ i = i }, Obj) end
    local back = mp.decode(mp.encode(t))
    for i = 1, 20 do assert.are.equal("v" .. i, back[i]) end
  end)

  it("sees library values added to or replaced in a module after its first use", function()
    local m = {}
    package.loaded["lmp.spec.grow"] = m
    m.f = coroutine.wrap(function() return "old" end)
    local old = m.f
    mp.encode(m.f)                          -- the map of library values is built
    m.f = coroutine.wrap(function() return "new" end)
    m.h = coroutine.wrap(function() return "h" end)
    assert.are.equal("h", mp.decode(mp.encode(m.h))())
    assert.are.equal("new", mp.decode(mp.encode(m.f))())
    -- the old function is no module's value any more: refused, not swapped
    assert.truthy(raises(mp.encode, old):find("lmp: cannot serialize C function", 1, true))
    package.loaded["lmp.spec.grow"] = nil
  end)

  it("sees a userdata added to a loaded module after its first use", function()
    local m = { first = io.stdout }
    package.loaded["lmp.spec.udmod"] = m
    mp.encode(io.stdout)                    -- the map of library values is built
    m.log = io.tmpfile()
    assert.are.equal(m.log, mp.decode(mp.encode(m.log)))
    m.log:close()
    package.loaded["lmp.spec.udmod"] = nil
  end)

  it("leaves a __serialize's error, its traceback and the collector's state as they were", function()
    local Boom = { __serialize = function() error("boom in serialize") end }
    local ok, tb = xpcall(mp.encode, debug.traceback, setmetatable({}, Boom))
    assert.is_false(ok)
    assert.truthy(tb:find("boom in serialize", 1, true))
    assert.truthy(tb:find("in function 'error'", 1, true), tb)   -- the frames inside
    assert.is_true(collectgarbage("isrunning"))
    local Stop = { __serialize = function() collectgarbage("stop") return 1 end }
    mp.encode(setmetatable({}, Stop))
    assert.is_false(collectgarbage("isrunning"))   -- the task's own choice stands
    collectgarbage("restart")
  end)

  it("round-trips a custom value that becomes nil, also when it appears twice", function()
    local Gone = mp.register("lmp.spec.gone", { __serialize = function() return nil end })
    local h = setmetatable({}, Gone)
    local t = mp.decode(mp.encode({ a = h, b = h, c = 1 }))
    assert.are.same({ c = 1 }, t)
    local Drop = mp.register("lmp.spec.drop", {
      __serialize = function(x) return { x.v } end,
      __deserialize = function() return nil end })
    local d = setmetatable({ v = 1 }, Drop)
    assert.are.same({ n = 2 }, table.pack(mp.decode(mp.encode(d, d))))
  end)

  it("never sets a registered metatable on the receiver's globals or a library table", function()
    local Point = mp.register("lmp.spec.point", { __index = { kind = "point" } })
    local name = "lmp.spec.point"
    local hdr = mp.encode():sub(1, -2)
    local custom = mp.encode(setmetatable({}, { __serialize = function() return 1 end }))
    local CUSTOM = custom:sub(#hdr + 2, #hdr + 2)
    local GLOBALS = mp.encode(_G):sub(#hdr + 2)
    local STRING = mp.encode(string):sub(#hdr + 2)
    for _, body in ipairs({ GLOBALS, STRING }) do
      local msg = hdr .. "\1" .. CUSTOM .. string.char(#name) .. name .. body
      pcall(mp.decode, msg)
    end
    assert.are_not.equal(Point, getmetatable(_G))
    assert.are_not.equal(Point, getmetatable(string))
    -- a table the message built still gets it
    local P2 = mp.register("lmp.spec.point2", { __serialize = function(p) return { p.x } end,
      __index = { kind = "point" } })
    local back = mp.decode(mp.encode(setmetatable({ x = 1 }, P2)))
    assert.are.equal("point", back.kind)
  end)
end)

---------------------------------------------------------------------------
-- What mp.encode writes, mp.decode reads (issue 10): a message the decoder
-- would refuse is refused by the encoder, naming the value.
---------------------------------------------------------------------------
describe("mp.encode (values that would not decode)", function()
  it("refuses a __serialize that returns its own value, or a table holding it", function()
    local self_ = setmetatable({}, { __serialize = function(x) return x end })
    assert_error_with("lmp: cannot serialize value whose __serialize result holds the value itself at args[1]<__serialize>",
      mp.encode, self_)
    local holder = setmetatable({}, { __serialize = function(x) return { inner = { x } } end })
    assert_error_with("lmp: cannot serialize value whose __serialize result holds the value itself at args[1][1]<__serialize>.inner[1]",
      mp.encode, { holder })
    local ud = setmetatable({}, { __serialize = function(x) return { x } end })
    assert_error_with("lmp: cannot serialize", mp.encode, ud)
  end)

  it("refuses two values whose __serialize results hold each other", function()
    local a, b = {}, {}
    setmetatable(a, { __serialize = function() return b end })
    setmetatable(b, { __serialize = function() return a end })
    assert_error_with("__serialize result holds the value itself", mp.encode, a)
  end)

  it("still sends a __serialize value that appears twice, and one inside another's result", function()
    local C = { __serialize = function(x) return { v = x.v } end }
    local c = setmetatable({ v = 1 }, C)
    local d = setmetatable({ v = c }, C)
    local t = mp.decode(mp.encode({ c, c, d }))
    assert.is_true(rawequal(t[1], t[2]))
    assert.equal(1, t[3].v.v)
  end)

  it("refuses a table key that __serialize turns into nil or NaN", function()
    local tonil = setmetatable({}, { __serialize = function() return nil end })
    local tonan = setmetatable({}, { __serialize = function() return 0 / 0 end })
    assert_error_with("lmp: cannot serialize table key that __serialize turns into nil or NaN at args[1]<key>",
      mp.encode, { [tonil] = 1 })
    assert_error_with("lmp: cannot serialize table key that __serialize turns into nil or NaN at args[1]<key>",
      mp.encode, { [tonan] = 1 })
    -- the same value met first as a value, then as a key (a back-reference)
    assert_error_with("lmp: cannot serialize table key that __serialize turns into nil or NaN",
      mp.encode, { tonil, { [tonil] = true } })
    -- as a value it is fine: it arrives as nil
    assert.same({ n = 1 }, mp.decode(mp.encode({ tonil, n = 1 })))
  end)

  it("refuses a __serialize that is not a function, naming where the value is", function()
    local five = setmetatable({}, { __serialize = 5 })
    assert_error_with("lmp: cannot serialize value whose __serialize is a number, not a function at args[1].x",
      mp.encode, { x = five })
  end)

  it("encodes again after a failure, also from inside a __serialize", function()
    assert_error_with("lmp: cannot serialize", mp.encode, { io.tmpfile and coroutine.create(print) })
    local inner = setmetatable({}, { __serialize = function() return mp.encode("nested") end })
    local s = mp.decode(mp.encode({ inner, "outer" }))
    assert.equal("nested", mp.decode(s[1]))
    assert.equal("outer", s[2])
  end)
end)

describe("mp.encode (environments, identity across fork)", function()
  it("sends a function's environment as the receiver's copy: a child forked after has it", function()
    local out = run_lua([[
      local env = setmetatable({ k = 2 }, { __index = _G })
      local f = load("return function(x) k = k + 1; return x * k end", "=env", "t", env)()
      local msg = mp.encode(f)
      local pid = assert(mp.fork())
      if pid == 0 then
        local g = mp.decode(msg, { functions = true })
        print("child=" .. g(10) .. "," .. env.k)
        os.exit(0)
      end
      mp.wait(pid)
      print("parent=" .. env.k)
    ]], 30)
    local f = fields(out)
    assert.equal("30,3", f.child, out)     -- the child's own copy changed
    assert.equal("2", f.parent, out)
  end)

  it("refuses it in a process that has no copy, saying so", function()
    local out = run_lua([[
      local pid = assert(mp.fork())
      if pid == 0 then mp.sleep(0.5) os.exit(0) end       -- forked before
      local env = setmetatable({ one = 1 }, { __index = _G })
      local f = load("return function() return one end", "=env", "t", env)()
      local msg = mp.encode(function() return f() end)
      local ok, err = pcall(mp.decode, msg, { functions = true })
      print("same=" .. tostring(ok))
      mp.wait(pid)
      local path = os.tmpname()
      local h = io.open(path, "wb") h:write(msg) h:close()
      print("path=" .. path)
    ]], 30)
    local f = fields(out)
    assert.equal("true", f.same, out)          -- the process that has it
    local out2 = run_lua(([[
      local h = io.open(%q, "rb") local s = h:read("a") h:close()
      os.remove(%q)
      local ok, err = pcall(mp.decode, s, { functions = true })
      print("ok=" .. tostring(ok))
      print("err=" .. tostring(err))
      local ok2, err2 = pcall(mp.decode, s)
      print("err2=" .. tostring(err2))
    ]]):format(f.path, f.path), 30)
    local g = fields(out2)
    assert.equal("false", g.ok, out2)
    assert.truthy(g.err:find("shared across fork is not known in this process", 1, true), out2)
    assert.truthy(g.err2:find("lmp: decode: message contains a function", 1, true), out2)
  end)
end)

describe("mp.decode (options)", function()
  it("refuses options that are not a table", function()
    assert_error_with("lmp: decode options must be a table, got string", mp.decode, mp.encode(1), "x")
  end)
end)
