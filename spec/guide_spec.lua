-- doc/guide.md's scripts run as they are written: every ```lua block that
-- is not marked "-- sketch" runs in a fresh lua5.4, must exit 0, and must
-- print what the guide says it prints (the fragments below).
local support = require "spec.support"

-- what each section's script must print (stdout and stderr together)
local expect = {
  ["A first pool"] = { "2 3 5 7 11\n", "1\tnil\n", "2\t4\n", "4\t16\n" },
  ["Seeing progress"] = { "8/8\n" },
  ["Stopping tasks that run too long"] = {
    "false\tlmp: task timed out after 0.5 s", "1\ttrue\t10\n", "2\ttrue\t20\n",
    "3\tfalse\tlmp: task timed out after 0.5 s", "4\ttrue\t40\n",
  },
  ["State that each worker loads once"] = { "true\tfalse\ttrue\n", "\nnil\n" },
  ["Logging from workers"] = { "] item 1\n", "] item 4\n", "[PoolWorker-" },
  ["Futures: submit, as_completed, cancel"] = {
    "^0.1\t%d+\t0.1%d s\n0.2\t%d+\t0.2%d s\n0.3\t%d+\t0.3%d s\ntrue\nfalse\tlmp: cancelled",
  },
  ["Driving a pool from an event loop"] = { "1 4 9 16\n" },
  ["Producer and consumer"] = { "50005000\n" },
  ["A worker pool fed by a queue"] = { "338350\n" },
  ["A shared counter"] = { "4000\t2002000.0\n" },
  ["Where did the time go: traces"] = { "true\n" },
  ["Crashes, Ctrl-C and cleaning up"] = { "false\tlmp: pool worker %d+ exited with code 3 while running a task",
                                          "\nstill working\n" },
}

local function blocks(text)
  local list, section = {}, nil
  for line, body in text:gmatch("([^\n]*)\n") do
    local h = line:match("^## (.+)$")
    if h then section = h end
    list[#list + 1] = { line = line, section = section }
  end
  local out, i = {}, 1
  while i <= #list do
    if list[i].line == "```lua" then
      local code, j = {}, i + 1
      while list[j].line ~= "```" do code[#code + 1] = list[j].line j = j + 1 end
      out[#out + 1] = { section = list[i].section, code = table.concat(code, "\n") }
      i = j
    end
    i = i + 1
  end
  return out
end

describe("doc/guide.md", function()
  local all = blocks(support.slurp(support.ROOT .. "/doc/guide.md"))

  it("has a script in every section it promises one", function()
    local seen = {}
    for _, b in ipairs(all) do seen[b.section] = true end
    for section in pairs(expect) do assert.is_true(seen[section], section) end
  end)

  it("has only scripts that start with require, so each can be pasted into a file as it is", function()
    for _, b in ipairs(all) do
      if not b.code:match("^%-%- sketch") then
        assert.truthy(b.code:match('^local mp = require "lmp"\n'), "in '" .. b.section .. "':\n" .. b.code)
      end
    end
  end)

  for n, b in ipairs(all) do
    if not b.code:match("^%-%- sketch") then
      it("runs the script of '" .. b.section .. "' (#" .. n .. ")", function()
        local text, status = support.run_lua(b.code, 60)
        assert.are.equal(0, status, text)
        for _, want in ipairs(expect[b.section] or {}) do
          local plain = not want:find("[%^%%]")
          assert.truthy(text:find(want, 1, plain), "expected '" .. want .. "' in:\n" .. text)
        end
      end)
    end
  end
end)
