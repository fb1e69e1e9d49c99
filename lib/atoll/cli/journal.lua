-- atoll journal ls | show ID: what a journal holds, for people and scripts.
local host = require "atoll.c.host"
local runtime = require "atoll.runtime"
local common = require "atoll.cli.common"

local M = {}

local say = common.say
local EXIT_APP = common.EXIT.APP

-- atoll journal ls | show ID: look inside a journal.
function M.run(opts)
  local json = require "atoll.util.json"
  local persistence = require "atoll.persistence"
  local from, limit = opts.from or 0, opts.limit or math.huge
  persistence.configure { journal = opts.journal, data_dir = opts.data_dir }
  if (opts.journal == nil or opts.journal == "sqlite") then
    local path = persistence.default_path(opts.data_dir)
    local f = io.open(path, "rb")
    if f == nil then
      say("no journal at " .. path .. " (use --data-dir or --journal)")
      return EXIT_APP
    end
    f:close()
  end
  local code = EXIT_APP
  runtime.start_root(function()
    local ok, err = persistence.probe()
    if not ok then
      say(err)
      return
    end
    if opts.subcommand == "ls" then
      local list = persistence.list()
      if opts.json_output then
        for _, e in ipairs(list) do print(json.encode(e)) end
      else
        local w = 2
        for _, e in ipairs(list) do w = math.max(w, #e.id) end
        print(("%-" .. w .. "s  %10s  %10s"):format("ID", "EVENTS", "LAST SEQ"))
        for _, e in ipairs(list) do print(("%-" .. w .. "s  %10d  %10d"):format(e.id, e.events, e.last_seq)) end
      end
      code = 0
      return
    end
    local after, left = from, limit
    while left > 0 do
      local page = persistence.events(opts.id, after, math.min(left, persistence.READ_PAGE))
      for _, e in ipairs(page) do
        print(json.encode { seq = e.seq, event = e.event == nil and json.null or e.event })
        after = e.seq
      end
      left = left - #page
      if #page < persistence.READ_PAGE then break end
    end
    code = 0
  end, function(ok, err, tb)
    if not ok then say(tostring(tb or err)) end
    host.stop(code)
  end, "journal")
  runtime.drain()
  return nil
end

return M
