-- The examples run as they are, from the repository root, in a fresh
-- interpreter, and print the lines of the seed's Python examples.
local support = require "spec.support"

-- runs an example from the repository root; returns its lines and exit status
local function run_example(path, ...)
  local text, status = support.run_file(path, { ... }, 30, support.ROOT)
  local lines = {}
  for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return lines, status, text
end

describe("examples/fork.lua", function()
  it("prints the start line, then the parent's and the child's lines with matching pids", function()
    local lines, status, text = run_example("examples/fork.lua")
    assert.are.equal(0, status, text)
    assert.are.equal(3, #lines, text)
    local pid = lines[1]:match("^Process %((%d+)%) start%.%.%.$")
    assert.truthy(pid, text)
    local parent, child, child2, ppid
    for i = 2, 3 do
      local a, b = lines[i]:match("^I %((%d+)%) just created a child process %((%d+)%)%.$")
      if a then parent, child = a, b end
      a, b = lines[i]:match("^I am child process %((%d+)%) and my parent is %((%d+)%)%.$")
      if a then child2, ppid = a, b end
    end
    assert.truthy(parent and child2, text)
    assert.are.equal(pid, parent)
    assert.are.equal(pid, ppid)
    assert.are.equal(child, child2)
    assert.are_not.equal(pid, child)
  end)
end)

describe("examples/process.lua", function()
  it("prints the parent line, starts the named child and prints its end, in order", function()
    local lines, status, text = run_example("examples/process.lua")
    assert.are.equal(0, status, text)
    assert.are.equal(4, #lines, text)
    local parent = lines[1]:match("^Process parent (%d+)%.$")
    assert.truthy(parent, text)
    assert.are.equal("Child process will start.", lines[2])
    local child = lines[3]:match("^Run child process test %((%d+)%)%.%.%.$")
    assert.truthy(child, text)
    assert.are_not.equal(parent, child)
    assert.are.equal("Child process end.", lines[4])
  end)
end)

describe("examples/pool.lua", function()
  it("runs five tasks on four workers and prints the seed's lines", function()
    local lines, status, text = run_example("examples/pool.lua")
    assert.are.equal(0, status, text)
    local parent = lines[1]:match("^Parent process (%d+)%.$")
    assert.truthy(parent, text)
    assert.are.equal("All subprocesses done.", lines[#lines], text)
    local waiting, runs, ends, pids = false, {}, {}, {}
    for _, l in ipairs(lines) do
      if l == "Waiting for all subprocesses done..." then waiting = true end
      local task, pid = l:match("^Run task (%d) %((%d+)%)%.%.%.$")
      if task then
        runs[#runs + 1] = task
        pids[pid] = true
        assert.are_not.equal(parent, pid)
      end
      local done = l:match("^Task (%d) runs %d+%.%d%d seconds%.$")
      if done then ends[#ends + 1] = done end
    end
    assert.is_true(waiting, text)
    table.sort(runs)
    table.sort(ends)
    assert.are.same({ "0", "1", "2", "3", "4" }, runs)
    assert.are.same({ "0", "1", "2", "3", "4" }, ends)
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.is_true(n >= 2 and n <= 4, text)
  end)
end)

describe("examples/wordcount.lua", function()
  it("counts the words of the files it is given, in parallel", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("apple banana apple\ncherry apple banana\n")
    f:close()
    local lines, status, text = run_example("examples/wordcount.lua", path, path)
    os.remove(path)
    assert.are.equal(0, status, text)
    assert.are.equal("2 files, 12 words, 3 distinct", lines[1], text)
    assert.truthy(lines[2]:match("^%s+6  apple$"), text)
    assert.truthy(lines[3]:match("^%s+4  banana$"), text)
    assert.truthy(lines[4]:match("^%s+2  cherry$"), text)
  end)
end)

describe("examples/queue.lua", function()
  it("writes A, B, C through a Queue and the reader gets them in order", function()
    local lines, status, text = run_example("examples/queue.lua")
    assert.are.equal(0, status, text)
    local wpid, rpid, puts, gets = nil, nil, {}, {}
    for _, l in ipairs(lines) do
      wpid = wpid or l:match("^Process to write: (%d+)$")
      rpid = rpid or l:match("^Process to read: (%d+)$")
      puts[#puts + 1] = l:match("^Put (%a) to queue%.%.%.$")
      gets[#gets + 1] = l:match("^Get (%a) from queue%.$")
    end
    assert.truthy(wpid and rpid, text)
    assert.are_not.equal(wpid, rpid)
    assert.are.same({ "A", "B", "C" }, puts, text)
    assert.are.same({ "A", "B", "C" }, gets, text)
    assert.are.equal(8, #lines, text)
  end)
end)

describe("examples/pipeline.lua", function()
  it("counts the words of a file through a reader, three workers and a merger", function()
    local tmp = support.tmpname()
    local f = assert(io.open(tmp, "w"))
    for i = 1, 300 do f:write("alpha beta alpha\n", i % 3 == 0 and "gamma\n" or "") end
    f:close()
    local lines, status, text = run_example("examples/pipeline.lua", tmp)
    os.remove(tmp)
    assert.are.equal(0, status, text)
    assert.are.equal("400 lines read, 400 counted by 3 workers", lines[1], text)
    assert.truthy(lines[2]:match("^alpha +600$"), text)
    assert.truthy(lines[3]:match("^beta +300$"), text)
    assert.truthy(lines[4]:match("^gamma +100$"), text)
  end)
end)
