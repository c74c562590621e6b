--[[
W6: encode then decode 100,000 records with mp.encode/mp.decode and with
Debian's lua-cjson, in the same process, interleaved (the order alternates
each repetition) after one untimed warm-up round. Two figures each way:
  single shot   one operation right after a full collection;
  steady state  20 operations back to back with no forced collection, time
                per operation: the garbage collection each side causes (and
                the fresh memory it touches) is included -- a pool sends
                messages back to back, so this is the figure that counts.
Prints best and median ms each way, encoded bytes and the lmp/cjson ratios;
every decoded result is checked against the input (fully in the warm-up
round, spot checks after) so neither side can cheat.

  lua5.4 bench/codec.lua [--runs N]        (default 5)
--]]
local BENCH = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = BENCH .. "/?.lua;" .. package.path
local B = require "benchlib"
local check = B.check

local NREC = 100000
local opts = B.parse_args(arg)
for _, n in ipairs(opts.names) do
  if n ~= "W6" then error("codec.lua: unknown workload " .. n) end
end

local cjson = require "cjson"
local okmp, mp = pcall(require, "lmp")
local lmperr
if not okmp then
  lmperr = tostring(mp):match("^[^\n]*")
  mp = nil
end
-- wall clock from lmp; without it (module not built yet) CPU time, same for both sides
local now = mp and mp.time or os.clock

local records = {}
for i = 0, NREC - 1 do
  records[i + 1] = { id = i, name = string.format("user_%07d", i), score = i * 0.5 + 0.25,
    tags = { "t" .. i % 10, "u" .. i % 7, "v" .. i % 3 } }
end

local function same(a, b, exact)
  if type(b) ~= "table" or b == a then return false end
  if exact and math.type(b.id) ~= "integer" then return false end
  if b.id ~= a.id or b.name ~= a.name or b.score ~= a.score then return false end
  local ta, tb = a.tags, b.tags
  return type(tb) == "table" and #tb == 3 and tb[1] == ta[1] and tb[2] == ta[2] and tb[3] == ta[3]
end

-- exact: lmp must keep integer subtypes; cjson turns every number into a float
local function verify(dec, full, exact, who)
  check(type(dec) == "table" and dec ~= records and #dec == NREC, who .. ": decoded array length")
  if full then
    for i = 1, NREC do check(same(records[i], dec[i], exact), who .. ": record " .. i) end
  else
    for _, i in ipairs({ 1, 2, 4243, 77777, NREC }) do
      check(same(records[i], dec[i], exact), who .. ": record " .. i)
    end
  end
end

local sides = {
  lmp = mp and {
    enc = function(t) return mp.encode(t) end,
    dec = function(s) return (mp.decode(s)) end,
    exact = true,
  },
  cjson = { enc = cjson.encode, dec = cjson.decode, exact = false },
}

local res = {}
for _, name in ipairs({ "lmp", "cjson" }) do
  res[name] = { enc = {}, dec = {}, encss = {}, decss = {} }
end
local bytes = {}
local STEADY = 20

local function measure(name, rep, warm)
  local s = sides[name]
  collectgarbage()
  collectgarbage()
  local t0 = now()
  local enc = s.enc(records)
  local te = now() - t0
  check(type(enc) == "string", name .. ": encode result")
  collectgarbage()
  t0 = now()
  local dec = s.dec(enc)
  local td = now() - t0
  verify(dec, warm, s.exact, name)
  bytes[name] = #enc
  dec = nil
  -- steady state: back to back, the collector left alone
  local last
  t0 = now()
  for _ = 1, STEADY do last = s.enc(records) end
  local tes = (now() - t0) / STEADY
  check(last == enc or #last == #enc, name .. ": steady encode result")
  t0 = now()
  for _ = 1, STEADY do dec = s.dec(enc) end
  local tds = (now() - t0) / STEADY
  verify(dec, false, s.exact, name)
  if warm then return end
  local r = res[name]
  r.enc[#r.enc + 1] = te * 1e3
  r.dec[#r.dec + 1] = td * 1e3
  r.encss[#r.encss + 1] = tes * 1e3
  r.decss[#r.decss + 1] = tds * 1e3
  io.stderr:write(string.format("  W6 rep %d/%d %-5s single: encode %6.1f decode %6.1f ms; steady: encode %6.1f decode %6.1f ms; %d bytes\n",
    rep, opts.runs, name, te * 1e3, td * 1e3, tes * 1e3, tds * 1e3, #enc))
end

-- untimed warm-up round (heap growth, first page faults), with a full check
for _, name in ipairs({ "lmp", "cjson" }) do
  if sides[name] then measure(name, 0, true) end
end
for rep = 1, opts.runs do
  local order = rep % 2 == 1 and { "lmp", "cjson" } or { "cjson", "lmp" }
  for _, name in ipairs(order) do
    if sides[name] then measure(name, rep) end
  end
end

-- report: ms (lower is better); cjson is the W6 reference ("raw" column)
local st = {}
local ROWS = { enc = "W6enc", dec = "W6dec", encss = "W6encss", decss = "W6decss" }
for _, way in ipairs({ "encss", "decss", "enc", "dec" }) do
  local row = ROWS[way]
  for _, name in ipairs({ "lmp", "cjson" }) do
    local side = name == "cjson" and "raw" or name
    if sides[name] then
      local s = B.stats(res[name][way], false)
      st[name .. way] = s
      print(string.format("STAT %s %s %.6g %.6g %d", row, side, s.median, s.best, s.n))
      print(string.format("INFO %s %s bytes %d", row, side, bytes[name]))
    else
      print(string.format("ERROR %s %s %s", row, side, lmperr))
    end
  end
end
io.stdout:flush()

local function line(way, label)
  local l, c = st["lmp" .. way], st["cjson" .. way]
  io.stderr:write(string.format("# W6 %s: cjson %.1f ms (best %.1f)", label, c.median, c.best))
  if l then
    io.stderr:write(string.format(", lmp %.1f ms (best %.1f); lmp/cjson %.2f (best %.2f)",
      l.median, l.best, l.median / c.median, l.best / c.best))
  else
    io.stderr:write(", lmp ERROR: " .. lmperr)
  end
  io.stderr:write("\n")
end
line("encss", "encode, steady state")
line("decss", "decode, steady state")
line("enc", "encode, single shot")
line("dec", "decode, single shot")
io.stderr:write(string.format("# W6 bytes: cjson %d%s%s\n", bytes.cjson,
  bytes.lmp and (", lmp " .. bytes.lmp) or "",
  bytes.lmp and string.format("; lmp/cjson %.2f", bytes.lmp / bytes.cjson) or ""))
if not okmp then io.stderr:write("# W6 clock: os.clock (CPU time), lmp not loadable\n") end
