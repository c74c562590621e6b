-- Count words in many files in parallel, the way you would with Python's Pool.
--   lua5.4 examples/wordcount.lua [file ...]     (default: the repository's sources)
-- Each task reads one file and returns its word counts; the parent merges them.
local mp = require "lmp"

local files = { ... }
if #files == 0 then
  local ls = io.popen("ls src/*.c src/*.h spec/*.lua examples/*.lua README.md 2>/dev/null")
  for path in ls:lines() do files[#files + 1] = path end
  ls:close()
end

local function count_words(path)
  local f, err = io.open(path, "rb")
  if not f then error(err, 0) end
  local counts = {}
  for word in f:read("a"):lower():gmatch("[%a_][%w_]*") do
    counts[word] = (counts[word] or 0) + 1
  end
  f:close()
  return counts
end

local pool <close> = mp.Pool()            -- one worker per CPU
local total, nwords = {}, 0
-- imap_unordered: merge each file's counts as soon as a worker is done with it
for _, counts in pool:imap_unordered(count_words, files) do
  for word, n in pairs(counts) do
    total[word] = (total[word] or 0) + n
    nwords = nwords + n
  end
end

local words = {}
for word in pairs(total) do words[#words + 1] = word end
table.sort(words, function(a, b)
  if total[a] ~= total[b] then return total[a] > total[b] end
  return a < b
end)
print(string.format("%d files, %d words, %d distinct", #files, nwords, #words))
for i = 1, math.min(10, #words) do
  print(string.format("%8d  %s", total[words[i]], words[i]))
end
