--[[
Run the lmp benchmarks (W1-W10, see /work/shared/BENCHMARKS.md) and print one
markdown summary table at the end.

  lua5.4 bench/run.lua                  -- everything, 5 runs per side
  lua5.4 bench/run.lua W2 W5            -- a subset (W1..W10, or W1default,
                                        -- W1chunk1, W4str, W4floats)
  (W10, backend "mpi" under mpirun, is skipped with a message when Open MPI,
  lmp/mpi.so or mpi4py is missing: make mpi; sh scripts/deps.sh mpi)
  lua5.4 bench/run.lua --runs 3 W1

Build lmp.so first (`make` at the repository root). Environment: PYTHON
(default python3), CC (default cc), LMP_BENCH_TIMEOUT (seconds per process,
default 300). Progress goes to stderr, the table to stdout.
--]]
local BENCH = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = BENCH .. "/?.lua;" .. package.path
local B = require "benchlib"

local opts = B.parse_args(arg)

-- which driver runs which workload
local DRIVERS = {
  { script = "pool.lua", names = { W1 = { "W1default", "W1chunk1" }, W1default = { "W1default" },
    W1chunk1 = { "W1chunk1" }, W2 = { "W2" }, W3 = { "W3" }, W4 = { "W4str", "W4floats" },
    W4str = { "W4str" }, W4floats = { "W4floats" } } },
  { script = "process.lua", names = { W5 = { "W5" } } },
  { script = "codec.lua", names = { W6 = { "W6encss", "W6decss", "W6enc", "W6dec" } } },
  { script = "ipc.lua", names = { W7 = { "W7int", "W7str", "W7mpmc" }, W8 = { "W8" },
    W9 = { "W9lock", "W9locked", "W9atomic" } } },
  { script = "mpi_w10.lua", names = { W10 = { "W10map", "W10apply" } } },
}

local selected = {} -- row id -> true
local args = {}     -- script -> names to pass
local names = #opts.names > 0 and opts.names or { "W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "W10" }
for _, n in ipairs(names) do
  local found = false
  for _, d in ipairs(DRIVERS) do
    local rows = d.names[n]
    if rows then
      found = true
      args[d.script] = args[d.script] or {}
      table.insert(args[d.script], n)
      for _, r in ipairs(rows) do selected[r] = true end
    end
  end
  if not found then
    io.stderr:write("run.lua: unknown workload " .. n .. " (W1..W10, W1default, W1chunk1, W4str, W4floats)\n")
    os.exit(2)
  end
end

local function capture(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  local s = p and p:read("a") or ""
  if p then p:close() end
  return (s:gsub("%s+$", ""))
end

-- results[row][side] = {median=, best=, n=} | {err=}
local results, info = {}, {}
for _, r in ipairs(B.rows) do results[r.id] = {} end

local t0 = os.time()
local load0 = capture("cut -d' ' -f1-3 /proc/loadavg")
io.stderr:write(string.format("lmp bench: %s, %s, %d CPUs online, load %s, %d runs per side\n",
  capture(B.quote(B.lua) .. " -v"), capture(B.python .. " --version"),
  tonumber(capture("nproc")) or 0, load0, opts.runs))
local have_so = io.open(B.root .. "/lmp.so")
if have_so then have_so:close() else
  io.stderr:write("lmp bench: WARNING: " .. B.root .. "/lmp.so not found (run make); lmp sides will fail\n")
end

for _, d in ipairs(DRIVERS) do
  if args[d.script] then
    local cmd = string.format("%s %s --runs %d", B.quote(B.lua), B.quote(BENCH .. "/" .. d.script),
      opts.runs)
    for _, n in ipairs(args[d.script]) do cmd = cmd .. " " .. n end
    io.stderr:write("== " .. cmd .. "\n")
    local p = assert(io.popen(cmd, "r"))
    for line in p:lines() do
      local row, side, med, best, n = line:match("^STAT (%S+) (%S+) (%S+) (%S+) (%S+)")
      if row and results[row] then
        results[row][side] = { median = tonumber(med), best = tonumber(best), n = tonumber(n) }
      else
        local erow, eside, msg = line:match("^ERROR (%S+) (%S+) (.*)$")
        if erow and results[erow] then
          results[erow][eside] = { err = msg }
        else
          local irow, iside, key, val = line:match("^INFO (%S+) (%S+) (%S+) (.*)$")
          if irow then
            info[#info + 1] = { row = irow, side = iside, key = key, value = val }
          else
            print(line)
          end
        end
      end
    end
    local ok, how, code = p:close()
    if not ok then
      io.stderr:write(string.format("run.lua: %s ended with %s %s\n", d.script, how, tostring(code)))
    end
  end
end

---------------------------------------------------------------- the table
local function cell(s)
  if not s then return "–" end
  if s.err then return "ERROR" end
  return string.format("%s (%s)", B.fmt(s.median), B.fmt(s.best))
end

local function ratio(a, b)
  if not (a and b) or a.err or b.err then return "–" end
  return string.format("%.2f", a.median / b.median)
end

local out = {}
local function emit(s) out[#out + 1] = s end
emit("")
emit(string.format("lmp benchmarks, %d runs per side, %s; medians with best in brackets;" ..
  " ratios are of medians (↑ higher is better, ↓ lower is better)", opts.runs, os.date("%Y-%m-%d %H:%M")))
emit("")
emit("| workload | unit | lmp | python mp (fork) | raw C / reference | lmp/python | lmp/raw | target | result |")
emit("|---|---|---|---|---|---|---|---|---|")
local notes, passes, misses = {}, 0, 0
for _, r in ipairs(B.rows) do
  if selected[r.id] then
    local s = results[r.id]
    local verdict
    if s.lmp and not s.lmp.err then
      local okc, pass = pcall(r.check, s)
      if okc and pass ~= nil then
        verdict = pass and "PASS" or "**MISS**"
        if pass then passes = passes + 1 else misses = misses + 1 end
      else
        verdict = "n/a"
      end
    else
      verdict = "n/a"
    end
    local py = r.id:match("^W6") and "–" or cell(s.python)
    emit(string.format("| %s | %s %s | %s | %s | %s | %s | %s | %s | %s |", r.label, r.unit,
      r.higher and "↑" or "↓", cell(s.lmp), py, (s.raw and r.raw) and (r.raw .. " " .. cell(s.raw)) or cell(s.raw),
      r.id:match("^W6") and "–" or ratio(s.lmp, s.python), ratio(s.lmp, s.raw), r.target, verdict))
    for _, side in ipairs({ "lmp", "python", "raw" }) do
      if s[side] and s[side].err then
        notes[#notes + 1] = string.format("- %s %s: %s", r.id, side, s[side].err)
      end
    end
  end
end
local bytes = {}
for _, i in ipairs(info) do
  if i.key == "bytes" and i.row == "W6encss" then bytes[i.side] = tonumber(i.value) end
end
emit("")
for _, i in ipairs(info) do         -- W10's extra figures (bench/mpi_w10.lua)
  if i.row:match("^W10") and i.key == "median" then
    emit(string.format("%s %s: %s.", i.row, i.side, i.value))
  end
end
if bytes.raw then
  emit(string.format("W6 encoded size: lmp %s bytes, cjson %d bytes%s.", bytes.lmp and tostring(bytes.lmp) or "–",
    bytes.raw, bytes.lmp and string.format(" (lmp/cjson %.2f)", bytes.lmp / bytes.raw) or ""))
end
emit(string.format("Targets: %d PASS, %d MISS. W3 ratios are speedups (serial time / Pool(2) time, " ..
  "same process); W4 64 MiB raw = C pipe, 1 MiB writes; W2 raw = C pipe ping-pong; " ..
  "W5 raw = C fork+_exit+waitpid; W6 reference = lua-cjson %s; W10 python = mpi4py.futures, " ..
  "raw = 8-byte MPI ping-pong on 2 ranks (bench/mpi_w10.lua).", passes, misses,
  "(no Python side)"))
if #notes > 0 then
  emit("")
  emit("Errors:")
  for _, n in ipairs(notes) do emit(n) end
end
emit(string.format("(total %d s; load average at start %s, at end %s — the machine is shared, " ..
  "so absolute numbers drift; compare ratios)", os.time() - t0, load0, capture("cut -d' ' -f1-3 /proc/loadavg")))
print(table.concat(out, "\n"))
