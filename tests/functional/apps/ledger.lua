-- A persistent ledger for persistence specs. On start it prints what it recovered, each entry
-- as N@WRITER (LEDGER_WRITER names this process, "w" by default):
--   recovered COUNT 1@w,2@w,...
-- then, with `-- --stream`, emits entries COUNT+1, COUNT+2, ... for ever, printing each one
-- whose emit returned (`acked N`) or failed (`failed N KIND MESSAGE`, then a retry). A conflict
-- ends the stream: the actor has stopped. LEDGER_SNAPSHOT_EVERY and LEDGER_ID set the rest.
local atoll = require "atoll"

local every = tonumber(os.getenv("LEDGER_SNAPSHOT_EVERY") or "")
local writer = os.getenv("LEDGER_WRITER") or "w"
local Ledger = atoll.actor.define("Ledger", { persistent = true, snapshot_every = every })

function Ledger:init(id)
  self.id = id
  self.entries = {}
end

function Ledger:persistence_id()
  return "ledger/" .. self.id
end

function Ledger:apply(e)
  self.entries[#self.entries + 1] = e.n .. "@" .. e.by
end

function Ledger:snapshot()
  return self.entries
end

function Ledger:restore(entries)
  self.entries = entries
end

function Ledger.distributed:entries()
  return self.entries
end

function Ledger.distributed:add(n)
  return self:emit { n = n, by = writer }
end

function Ledger.distributed:stream(from)
  local n = from
  while true do
    local ok, err = pcall(self.emit, self, { n = n, by = writer, pad = ("x"):rep(100) })
    if ok then
      print("acked " .. n)
      n = n + 1
    else
      local kind = atoll.errors.kind(err) or "?"
      print(("failed %d %s %s"):format(n, kind, tostring(err.message or err)))
      if kind == "conflict" then return end
      atoll.sleep(0.05)
    end
  end
end

local ledger = atoll.spawn(Ledger, os.getenv("LEDGER_ID") or "main")
atoll.register("ledger", ledger)
local entries = ledger:entries()
print(("recovered %d %s"):format(#entries, table.concat(entries, ",")))
if arg[1] == "--stream" then
  atoll.send(ledger, "stream", #entries + 1)
end
