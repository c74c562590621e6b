-- medians.lua FILE: medians of "<config> <workload> RESULT <key> <value> ..."
-- lines (sweep_poll.sh, sweep_sizes.sh), one row per config and workload.
local v, order = {}, {}
for l in io.lines(arg[1]) do
  local name, w, val, rest = l:match("^(%S+) (%S+) RESULT %S+ (%S+)(.*)$")
  if name then
    local k = name .. " " .. w
    if not v[k] then
      v[k] = { name = name, w = w, vals = {}, extra = {} }
      order[#order + 1] = k
    end
    table.insert(v[k].vals, tonumber(val))
    table.insert(v[k].extra, rest:match("(cpu0.*)$") or "")
  end
end
table.sort(order, function(a, b)
  return v[a].w < v[b].w or (v[a].w == v[b].w and a < b)
end)
for _, k in ipairs(order) do
  local t = v[k].vals
  table.sort(t)
  local m = #t % 2 == 1 and t[(#t + 1) // 2] or (t[#t // 2] + t[#t // 2 + 1]) / 2
  print(string.format("%-14s %-6s median %10.4g   min %10.4g max %10.4g  n=%d  last: %s", v[k].name,
    v[k].w, m, t[1], t[#t], #t, v[k].extra[#v[k].extra]))
end
