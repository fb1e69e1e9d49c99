-- A persistent ledger for persistence specs. On start it prints what it recovered:
--   recovered COUNT FIRST,SECOND,...
-- then, with `-- --stream`, emits entries COUNT+1, COUNT+2, ... for ever, printing each one
-- whose emit returned (`acked N`) or failed (`failed N KIND MESSAGE`).
local atoll = require "atoll"

local every = tonumber(os.getenv("LEDGER_SNAPSHOT_EVERY") or "")
local Ledger = atoll.actor.define("Ledger", { persistent = true, snapshot_every = every })

function Ledger:init(id)
  self.id = id
  self.entries = {}
end

function Ledger:persistence_id()
  return "ledger/" .. self.id
end

function Ledger:apply(e)
  self.entries[#self.entries + 1] = e.n
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
  return self:emit { n = n }
end

function Ledger.distributed:stream(from)
  local n = from
  while true do
    local ok, err = pcall(self.emit, self, { n = n, pad = ("x"):rep(100) })
    if ok then
      print("acked " .. n)
      n = n + 1
    else
      print(("failed %d %s %s"):format(n, atoll.errors.kind(err) or "?", tostring(err.message or err)))
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
