-- The instances of the specs' singleton counter (tests/functional/apps/singles.lua), from the lines
-- its nodes print on the monotonic clock every process of a machine shares:
--
--   start RUN T        an instance started
--   serve RUN N T      it served its Nth call
--
-- intervals(outputs) -> { { run, node, from, to, served }... } by start, from the stdout of each
-- node (outputs: node -> text); an instance's interval runs from its start to the last call it
-- served. overlap(list) -> ms, the longest time two instances served at once (0 when none did),
-- and a line naming the worst pair.
local M = {}

function M.intervals(outputs)
  local runs = {}
  for node, text in pairs(outputs) do
    for line in text:gmatch("[^\n]+") do
      local run, t = line:match("^start (%S+) ([%d%.]+)$")
      if run then runs[run] = { run = run, node = node, from = tonumber(t), to = tonumber(t), served = 0 } end
      local srun, _, st = line:match("^serve (%S+) (%d+) ([%d%.]+)$")
      if srun and runs[srun] then
        runs[srun].to = math.max(runs[srun].to, tonumber(st))
        runs[srun].served = runs[srun].served + 1
      end
    end
  end
  local list = {}
  for _, r in pairs(runs) do list[#list + 1] = r end
  table.sort(list, function(a, b) return a.from < b.from end)
  return list
end

function M.overlap(list)
  local worst, why = 0, nil
  for k = 2, #list do
    for j = 1, k - 1 do
      local a, b = list[j], list[k]
      local ms = (math.min(a.to, b.to) - b.from) * 1000
      if a.to >= b.from and ms >= worst then
        worst = ms
        why = ("instances %s on %s (%.3f to %.3f, %d served) and %s on %s (from %.3f) overlap by %.0f ms")
          :format(a.run, tostring(a.node), a.from, a.to, a.served, b.run, tostring(b.node), b.from, ms)
      end
    end
  end
  return worst, why
end

return M
