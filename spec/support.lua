-- Helpers the spec files share: `local support = require "spec.support"`
-- (busted's lpath has ./?.lua, and the specs run from the repository root).
-- The name has no "_spec", so busted never runs this file as a spec.
local lfs = require "lfs"

local M = {}

-- The repository root, found from this file's own path (spec/..), not from
-- the current directory: under `make test-asan` it is the shadow copy
-- lmp-asan/, whose lmp.so is the sanitized build.
do
  local src = debug.getinfo(1, "S").source:sub(2)
  local dir = src:match("^(.*)/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then dir = lfs.currentdir() .. "/" .. dir end
  M.ROOT = dir .. "/.."
end

-- True under `make test-asan`: the sanitized build is some 2-3 times slower,
-- so the specs that guard against hangs with a wall-clock bound widen it.
M.SANITIZED = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) ~= nil

-- `s` quoted for the shell
function M.q(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

-- the contents of a file, or `missing` (nil unless given) if it cannot be opened
function M.slurp(path, missing)
  local f = io.open(path, "rb")
  if not f then return missing end
  local s = f:read("a")
  f:close()
  return s
end

-- a fresh temporary file name, with no file behind it yet
function M.tmpname()
  local name = os.tmpname()
  os.remove(name)
  return name
end

--[[
Runs the Lua file `script` in a fresh lua5.4 with the arguments `args` (a
list, or nil), in the directory `dir` (nil: the current one), with output to
a file (so children that outlive the interpreter never block the reader) and
a hard time limit of `seconds` (default 30, `timeout -s KILL`). Returns the
output, the exit status and how the run ended ("exit" or "signal").
]]
function M.run_file(script, args, seconds, dir)
  local out = os.tmpname()
  local words = {}
  for i, a in ipairs(args or {}) do words[i] = " " .. M.q(a) end
  local _, how, status = os.execute(("%stimeout -s KILL %d lua5.4 %s%s >%s 2>&1"):format(
    dir and "cd " .. M.q(dir) .. " && " or "", seconds or 30, M.q(script),
    table.concat(words), M.q(out)))
  local text = M.slurp(out) or ""
  os.remove(out)
  return text, status, how
end

--[[
Runs the shell command `cmd` (a string, run by /bin/sh) like run_file: output
to a file, a hard time limit of `seconds` (default 30). Returns the output, the
exit status and how the run ended.
]]
function M.run_sh(cmd, seconds)
  local out = os.tmpname()
  local _, how, status = os.execute(("timeout -s KILL %d /bin/sh -c %s >%s 2>&1"):format(
    seconds or 30, M.q(cmd), M.q(out)))
  local text = M.slurp(out) or ""
  os.remove(out)
  return text, status, how
end

--[[
Runs the Lua script `script` in a fresh lua5.4 like run_file, with stdout and
stderr kept apart. `opts` (optional): dir, the directory to run in (default:
the current one); seconds, the hard time limit (default 60); env, a table of
environment variables to set. Returns stdout, stderr, the exit status and how
the run ended ("exit" or "signal").
]]
function M.run_script(script, args, opts)
  opts = opts or {}
  local out, err = os.tmpname(), os.tmpname()
  local words = {}
  for i, a in ipairs(args or {}) do words[i] = " " .. M.q(a) end
  local env = {}
  for k, v in pairs(opts.env or {}) do env[#env + 1] = " " .. M.q(k .. "=" .. v) end
  table.sort(env)
  local _, how, status = os.execute(("%senv%s timeout -s KILL %d lua5.4 %s%s >%s 2>%s"):format(
    opts.dir and "cd " .. M.q(opts.dir) .. " && " or "", table.concat(env), opts.seconds or 60,
    M.q(script), table.concat(words), M.q(out), M.q(err)))
  local stdout, stderr = M.slurp(out) or "", M.slurp(err) or ""
  os.remove(out)
  os.remove(err)
  return stdout, stderr, status, how
end

--[[
Runs `code` like run_file, in a fresh lua5.4 that loads the repository's
lmp.so as `mp` first; `prelude` (optional) is Lua text run between that and
`code`. Returns the output, the exit status and how the run ended.
]]
function M.run_lua(code, seconds, prelude)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(("package.cpath = %q .. package.cpath\n"):format(M.ROOT .. "/?.so;"))
  f:write('local mp = require "lmp"\n', prelude and prelude .. "\n" or "", code, "\n")
  f:close()
  local text, status, how = M.run_file(script, nil, seconds)
  os.remove(script)
  return text, status, how
end

-- a prelude for run_lua: the script's stdout is line-buffered, so what it
-- printed before a crash is in the output
M.LINEBUF = 'io.stdout:setvbuf("line")'

-- runs a shell command; true if it exited 0
function M.sh(cmd)
  return os.execute(cmd) == true
end

-- our children: pid -> state letter (zombies included), read from /proc
function M.children()
  local me, kids = require("lmp").getpid(), {}
  for name in lfs.dir("/proc") do
    if name:match("^%d+$") then
      local st, ppid = (M.slurp("/proc/" .. name .. "/stat") or ""):match("^%d+ %b() (%a) (%d+)")
      if ppid and tonumber(ppid) == me then kids[tonumber(name)] = st end
    end
  end
  return kids
end

-- how many entries a table has
function M.count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- "key=value" lines printed by a script, as a table
function M.fields(text)
  local t = {}
  for k, v in text:gmatch("([%w_]+)=([^\n]*)") do t[k] = v end
  return t
end

-- a pid that has exited (gone, or a zombie nobody reaps yet)
function M.dead(pid)
  local stat = M.slurp("/proc/" .. pid .. "/stat")
  if not stat then return true end
  return stat:match("^%d+ %b() (%a)") == "Z"
end

-- gone for good (not even a zombie)
function M.gone(pid)
  return M.slurp("/proc/" .. pid .. "/stat") == nil
end

-- polls `pred` until it is true or `seconds` (default 10) have passed
function M.wait_until(pred, seconds)
  local mp = require "lmp"
  local deadline = mp.time() + (seconds or 10)
  while mp.time() < deadline do
    if pred() then return true end
    mp.sleep(0.02)
  end
  return pred()
end

-- how many file descriptors this process has open
function M.open_fds()
  local n = 0
  for _ in lfs.dir("/proc/self/fd") do n = n + 1 end
  return n
end

-- pcall that returns the error value (or fails if the call succeeded)
function M.errmsg(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error, the call succeeded")
  return err
end

-- the error message of f(...), which must be a string containing `text`
function M.assert_error_with(text, f, ...)
  local err = M.errmsg(f, ...)
  assert(type(err) == "string" and err:find(text, 1, true),
    ("expected an error containing %q, got %s"):format(text, tostring(err)))
  return err
end

-- {1, ..., n}
function M.range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- the distinct pids of a pool's workers, sorted: learnt by slow-ish tasks,
-- 4 per worker, so that every worker takes some
function M.worker_pids(pool, n)
  local mp = require "lmp"
  local seen, list = {}, {}
  for _, pid in ipairs(pool:map(function() mp.sleep(0.05) return mp.getpid() end, M.range(4 * n), 1)) do
    if not seen[pid] then seen[pid] = true list[#list + 1] = pid end
  end
  table.sort(list)
  return list
end

return M
