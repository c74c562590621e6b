--[[
Shared helpers for the lmp benchmarks (bench/*.lua).

Each bench script starts with

    local BENCH = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
    package.path = BENCH .. "/?.lua;" .. package.path
    local B = require "benchlib"

and the library puts the repository root (where `make` leaves lmp.so) first
on package.cpath, so `require "lmp"` finds ./lmp.so whatever the working
directory is.

Protocol between processes (all on stdout, one item per line):
  RESULT <key> <value> [name=value ...]   a single measurement, from a --one
                                          run, a raw C program or a Python script
  STAT <row> <side> <median> <best> <n>   a workload summary from a driver
  INFO <row> <side> <name> <value>        extra facts (e.g. encoded bytes)
  ERROR <row> <side> <message>            a side that could not be measured
--]]
local B = {}

B.dir = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
B.root = B.dir .. "/.."
package.cpath = B.root .. "/?.so;" .. package.cpath

B.lua = arg and arg[-1] or "lua5.4"
B.python = os.getenv("PYTHON") or "python3"
B.timeout = tonumber(os.getenv("LMP_BENCH_TIMEOUT") or "") or 300

-- The summary rows, in table order. `higher`: bigger is better.
-- `target(s)` gets the row's stats {lmp=, python=, raw=} (each {median=,
-- best=, n=} or nil) and returns ok(boolean or nil), text.
B.rows = {
  { id = "W1default", label = "W1 map identity, default chunks", unit = "tasks/s", higher = true,
    target = "≥ 10 M/s (median)", check = function(s) return s.lmp.median >= 10e6 end },
  { id = "W1chunk1", label = "W1 map identity, chunksize=1", unit = "tasks/s", higher = true,
    target = "≥ 250 k/s (median)", check = function(s) return s.lmp.median >= 250e3 end },
  { id = "W2", label = "W2 sequential apply", unit = "µs", higher = false, raw = "C pipe ping-pong",
    target = "≤ 20 µs (median)", check = function(s) return s.lmp.median <= 20 end },
  { id = "W3", label = "W3 cpu speedup, Pool(2)", unit = "×", higher = true,
    target = "≥ 1.9× (best)", check = function(s) return s.lmp.best >= 1.9 end },
  { id = "W4str", label = "W4 64 MiB string result", unit = "MB/s", higher = true, raw = "C pipe",
    target = "≥ 85 % of raw pipe (medians)",
    check = function(s) return s.raw and s.lmp.median >= 0.85 * s.raw.median end },
  { id = "W4floats", label = "W4 10^6 floats result", unit = "ms", higher = false,
    target = "≤ 50 ms (median)", check = function(s) return s.lmp.median <= 50 end },
  { id = "W5", label = "W5 Process start+join", unit = "µs", higher = false, raw = "C fork+waitpid",
    target = "≤ 1.5 × raw fork (medians)",
    check = function(s) return s.raw and s.lmp.median <= 1.5 * s.raw.median end },
  { id = "W6encss", label = "W6 encode 100k records, steady state", unit = "ms", higher = false,
    raw = "lua-cjson", target = "≤ 0.5 × cjson (medians)",
    check = function(s) return s.raw and s.lmp.median <= 0.5 * s.raw.median end },
  { id = "W6decss", label = "W6 decode 100k records, steady state", unit = "ms", higher = false,
    raw = "lua-cjson", target = "≤ 0.5 × cjson (medians)",
    check = function(s) return s.raw and s.lmp.median <= 0.5 * s.raw.median end },
  { id = "W6enc", label = "W6 encode, single shot", unit = "ms", higher = false, raw = "lua-cjson",
    target = "(for reference)", check = function() return nil end },
  { id = "W6dec", label = "W6 decode, single shot", unit = "ms", higher = false, raw = "lua-cjson",
    target = "(for reference)", check = function() return nil end },
  -- issue 12 (bench/ipc.lua); for W7 the third column is Python's SimpleQueue
  { id = "W7int", label = "W7 Queue 10^6 small ints, 1→1", unit = "items/s", higher = true,
    raw = "py SimpleQueue", target = "≥ 10 × Python Queue (medians)",
    check = function(s) return s.python and s.lmp.median >= 10 * s.python.median end },
  { id = "W7str", label = "W7 Queue 10^4 strings of 10 KB", unit = "MB/s", higher = true,
    raw = "py SimpleQueue", target = "≥ 2 × Python Queue (medians)",
    check = function(s) return s.python and s.lmp.median >= 2 * s.python.median end },
  { id = "W7mpmc", label = "W7 Queue 2×2, 10^6 ints", unit = "items/s", higher = true,
    raw = "py SimpleQueue", target = "≥ 10 × Python Queue (medians)",
    check = function(s) return s.python and s.lmp.median >= 10 * s.python.median end },
  { id = "W8", label = "W8 Pipe round trip {i, \"x\"}", unit = "µs", higher = false,
    raw = "C pipe ping-pong", target = "≤ 1.3 × raw ping-pong (medians)",
    check = function(s) return s.raw and s.lmp.median <= 1.3 * s.raw.median end },
  { id = "W9lock", label = "W9 Lock acquire+release, uncontended", unit = "ns", higher = false,
    target = "≤ 0.5 × Python (medians)",
    check = function(s) return s.python and s.lmp.median <= 0.5 * s.python.median end },
  { id = "W9locked", label = "W9 2 processes × 10^6 locked increments", unit = "incr/s", higher = true,
    target = "≥ 3 × Python (medians)",
    check = function(s) return s.python and s.lmp.median >= 3 * s.python.median end },
  { id = "W9atomic", label = "W9 the same with Value:add (Python: locked)", unit = "incr/s",
    higher = true, target = "≥ 10 × Python locked (medians)",
    check = function(s) return s.python and s.lmp.median >= 10 * s.python.median end },
  -- W10: backend "mpi" on 3 ranks; python = mpi4py.futures, raw = an 8-byte
  -- MPI_Send/MPI_Recv ping-pong on 2 ranks (bench/mpi_w10.lua)
  { id = "W10map", label = "W10 MPI map identity, chunksize=1, 3 ranks", unit = "tasks/s",
    higher = true, target = "≥ 20 × mpi4py.futures (medians)",
    check = function(s) return s.python and s.lmp.median >= 20 * s.python.median end },
  { id = "W10apply", label = "W10 MPI sequential apply, 3 ranks", unit = "µs", higher = false,
    raw = "MPI ping-pong", target = "≤ 10 × raw ping-pong (medians)",
    check = function(s) return s.raw and s.lmp.median <= 10 * s.raw.median end },
}
B.row = {}
for _, r in ipairs(B.rows) do B.row[r.id] = r end

function B.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function B.median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

function B.stats(t, higher)
  if #t == 0 then return nil end
  local best = t[1]
  for _, v in ipairs(t) do
    if (higher and v > best) or (not higher and v < best) then best = v end
  end
  return { median = B.median(t), best = best, n = #t }
end

-- Human-friendly number: 3 significant figures, k/M suffixes for big values.
function B.fmt(v)
  if v == nil then return "–" end
  local a = math.abs(v)
  if a >= 1e6 then return string.format("%.2f M", v / 1e6) end
  if a >= 1e4 then return string.format("%.1f k", v / 1e3) end
  if a >= 100 then return string.format("%.0f", v) end
  if a >= 10 then return string.format("%.1f", v) end
  return string.format("%.2f", v)
end

function B.parse_args(argv, defaults)
  local opts = { runs = 5, only = {}, names = {} }
  for k, v in pairs(defaults or {}) do opts[k] = v end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--runs" then
      i = i + 1
      opts.runs = assert(math.tointeger(tonumber(argv[i])), "--runs needs an integer")
      assert(opts.runs >= 1, "--runs must be at least 1")
    elseif a:match("^%-%-runs=") then
      opts.runs = assert(math.tointeger(tonumber(a:match("=(.*)"))), "--runs needs an integer")
    elseif a == "--one" then
      i = i + 1
      opts.one = argv[i]
    else
      opts.names[#opts.names + 1] = a
    end
    i = i + 1
  end
  return opts
end

-- Build the raw C programs on demand (bench/<name> from bench/<name>.c).
function B.ensure_built(name)
  local exe, src = B.dir .. "/" .. name, B.dir .. "/" .. name .. ".c"
  local fresh = os.execute("test " .. B.quote(exe) .. " -nt " .. B.quote(src))
  if not fresh then
    local cc = os.getenv("CC") or "cc"
    local cmd = string.format("%s -O2 -o %s %s", cc, B.quote(exe), B.quote(src))
    assert(os.execute(cmd), "bench: cannot build " .. src)
  end
  return exe
end

-- The first non-empty line of a file (a Lua error or a failed check), shortened.
local function firstline(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  local l = s:match("[^\n]*%S[^\n]*") or ""
  l = l:gsub("%s+", " ")
  if #l > 240 then l = l:sub(1, 237) .. "..." end
  return l
end

--[[
Run a command in a fresh process (with a timeout) and collect its RESULT
lines. Returns results (key -> {value=number, extra=string}) or nil, err.
--]]
function B.run(cmd, timeout)
  local errf = os.tmpname()
  local full = string.format("timeout -k 5 %d %s 2>%s", timeout or B.timeout, cmd, B.quote(errf))
  local p = assert(io.popen(full, "r"))
  local res, any = {}, false
  for line in p:lines() do
    local key, val, extra = line:match("^RESULT%s+(%S+)%s+(%S+)%s*(.*)$")
    if key and tonumber(val) then
      res[key] = { value = tonumber(val), extra = extra }
      any = true
    end
  end
  local ok, how, code = p:close()
  local err = firstline(errf)
  os.remove(errf)
  if not ok then
    if how == "exit" and code == 124 then
      return nil, "timed out after " .. (timeout or B.timeout) .. " s"
    end
    return nil, string.format("%s %s%s", how, tostring(code), err ~= "" and (": " .. err) or "")
  end
  if not any then return nil, "no RESULT line" .. (err ~= "" and (": " .. err) or "") end
  return res
end

--[[
Interleave the sides of one workload: `sides` is an array of
{name=, cmd=, key=}. Round r runs the sides in order, reversed on even
rounds. Returns name -> {values..., err=string}.
--]]
function B.interleave(rowid, sides, runs, quiet)
  local out = {}
  for _, s in ipairs(sides) do out[s.name] = { extras = {} } end
  for r = 1, runs do
    for k = 1, #sides do
      local s = sides[r % 2 == 1 and k or #sides + 1 - k]
      local vals = out[s.name]
      if not vals.err then
        local res, err = B.run(s.cmd, s.timeout)
        if res and res[s.key] then
          vals[#vals + 1] = res[s.key].value
          vals.extras[#vals.extras + 1] = res[s.key].extra
          if not quiet then
            io.stderr:write(string.format("  %-9s run %d/%d %-7s %s %s\n", rowid, r, runs,
              s.name, B.fmt(res[s.key].value), res[s.key].extra or ""))
          end
        else
          vals.err = err or ("missing RESULT " .. s.key)
          io.stderr:write(string.format("  %-9s run %d/%d %-7s ERROR %s\n", rowid, r, runs,
            s.name, vals.err))
        end
      end
    end
  end
  return out
end

-- Print STAT/ERROR lines for a row and a one-line human summary.
function B.report(rowid, out, order)
  local row = B.row[rowid]
  local st = {}
  for _, side in ipairs(order) do
    local vals = out[side]
    if vals then
      if vals.err then
        print(string.format("ERROR %s %s %s", rowid, side, vals.err))
      else
        local s = B.stats(vals, row.higher)
        st[side] = s
        print(string.format("STAT %s %s %.6g %.6g %d", rowid, side, s.median, s.best, s.n))
      end
    end
  end
  local parts = {}
  for _, side in ipairs(order) do
    if st[side] then
      parts[#parts + 1] = string.format("%s %s (best %s)", side, B.fmt(st[side].median),
        B.fmt(st[side].best))
    elseif out[side] then
      parts[#parts + 1] = side .. " ERROR"
    end
  end
  local ratios = {}
  if st.lmp then
    for _, side in ipairs(order) do
      if side ~= "lmp" and st[side] then
        ratios[#ratios + 1] = string.format("lmp/%s %.2f", side, st.lmp.median / st[side].median)
      end
    end
  end
  io.stderr:write(string.format("# %s [%s]: %s%s\n", row.label, row.unit, table.concat(parts, ", "),
    #ratios > 0 and ("; " .. table.concat(ratios, ", ")) or ""))
  io.stdout:flush()
  return st
end

function B.check(cond, what)
  if not cond then
    io.stderr:write("bench: check failed: " .. what .. "\n")
    os.exit(1)
  end
end

return B
