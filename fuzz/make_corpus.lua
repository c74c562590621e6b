-- Write the libFuzzer seed corpus for mp.decode: one file per message.
--   lua5.4 fuzz/make_corpus.lua [dir]      (default dir: fuzz/corpus)
-- Run from the repository root after `make` (`make corpus` does both).
-- Each file is the output of mp.encode on a small, varied set of values,
-- so the fuzzer starts from well-formed messages of every tag.
package.cpath = "./?.so;" .. package.cpath
local mp = require "lmp"

local dir = arg[1] or "fuzz/corpus"

local seeds = {}
local function seed(name, ...)
  seeds[#seeds + 1] = { name = name, n = select("#", ...), ... }
end

-- scalars
seed("empty")                                   -- no values at all
seed("nil", nil)
seed("nils", nil, nil, nil)
seed("bools", true, false)
seed("int_zero", 0)
seed("ints_small", 1, -1, 63, -64, 64, 127, 128, 300, -300)
seed("int_max", math.maxinteger)
seed("int_min", math.mininteger)
seed("ints_edges", 2^31 // 1, -2^31 // 1, 2^32 // 1, 2^53 // 1, -(2^53 // 1))
seed("float_simple", 0.5, -1.25, 3.141592653589793)
seed("float_zero", 0.0, -0.0)
seed("float_inf", math.huge, -math.huge)
seed("float_nan", 0/0, -(0/0))
seed("float_tiny", 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308)
seed("float_integral", 1.0, 2^63, -2^63)

-- strings
seed("str_empty", "")
seed("str_ascii", "hello, world")
seed("str_binary", "\0\1\2\255\254\0LMP\1")
seed("str_long", string.rep("abcdefgh", 40))  -- length needs a 2-byte varint
seed("str_utf8", "na\xc3\xafve \xe2\x82\xac")

-- tables
seed("tbl_empty", {})
seed("tbl_array", { 1, 2, 3, "four", 5.5, true })
seed("tbl_holes", { 1, nil, 3, n = 3 })
seed("tbl_hash", { a = 1, b = "two", [3.5] = false, [true] = "t" })
seed("tbl_mixed", { 10, 20, 30, x = { y = { z = "deep" } }, [-1] = "neg" })
seed("tbl_nested", { { { { { "five levels" } } } } })
seed("tbl_table_keys", { [{ 1 }] = "k1", [{ 2 }] = "k2" })

do -- a table that contains itself
  local t = { name = "self" }
  t.self = t
  t[1] = t
  seed("tbl_cycle", t)
end
do -- two tables pointing at each other
  local a, b = { "a" }, { "b" }
  a.other, b.other = b, a
  seed("tbl_cycle2", a, b)
end
do -- one table referenced from several places, across values
  local shared = { "shared", 42 }
  seed("tbl_shared", { shared, shared, k = shared }, shared, { shared })
end
do -- a shared table used as a key and as a value
  local k = { "key" }
  seed("tbl_shared_key", { [k] = k }, k)
end
do -- a wider table (array and hash parts with multi-byte counts)
  local t = {}
  for i = 1, 200 do t[i] = i * 3 end
  for i = 1, 150 do t["k" .. i] = i % 2 == 0 end
  seed("tbl_wide", t)
end
do -- tables referred to again from inside and after a table whose key
   -- count needs two bytes (the encoder widens it after the body)
  local t = {}
  for i = 1, 140 do t["k" .. i] = { i } end
  t.k70.back = t.k3
  seed("tbl_wide_shared", t, t.k3, t.k140)
end
do -- nesting deep enough to exercise the depth counter, well within the limit
  local t = {}
  local cur = t
  for _ = 1, 50 do cur.next = {}; cur = cur.next end
  seed("tbl_deep50", t)
end

-- values the decoder must refuse or resolve by name: functions (refused
-- without opts.functions, which the fuzzer never passes), library values,
-- registered metatables (`mp.register` may not exist in every build)
seed("func_plain", function(x) return x + 1 end)
do
  local up = { 1, 2 }
  local function f() return up end
  local function g() return up, print end
  seed("func_upvalues", f, g)
end
seed("named_libs", string.format, io.stdout, math, mp)
if mp.register then
  local Point = {}
  Point.__index = Point
  pcall(mp.register, "corpus.Point", Point)
  seed("meta_registered", setmetatable({ x = 1, y = 2 }, Point))
end

-- several values of every kind in one message
seed("mixed", nil, true, -7, 2.5, "s", { 1, { 2 } }, false, math.mininteger, 0/0)

local written = 0
for _, s in ipairs(seeds) do
  local ok, msg = pcall(mp.encode, table.unpack(s, 1, s.n))
  if ok then
    local f = assert(io.open(dir .. "/" .. s.name, "wb"))
    f:write(msg)
    f:close()
    written = written + 1
  else
    io.stderr:write("make_corpus: skipping ", s.name, ": ", tostring(msg), "\n")
  end
end
print(("make_corpus: wrote %d seeds to %s"):format(written, dir))
