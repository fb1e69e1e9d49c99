-- A bank account whose balance survives crashes and restarts: its state is the replay of the
-- events it emitted. Edit apply() or the distributed functions while a node runs (--watch).
local atoll = require "atoll"

local Account = atoll.actor.define("Account", { persistent = true, snapshot_every = 100 })

function Account:init(owner)
  self.owner, self.balance, self.history = owner, 0, 0
end

-- The id of this actor's event stream: one writer at a time, anywhere.
function Account:persistence_id()
  return "account/" .. self.owner
end

-- Events change state here and only here; the same events always make the same state.
function Account:apply(e)
  self.balance = self.balance + e.amount
  self.history = self.history + 1
end

-- A snapshot every 100 events, so that recovery replays at most 100.
function Account:snapshot()
  return { balance = self.balance, history = self.history }
end

function Account:restore(s)
  self.balance, self.history = s.balance, s.history
end

function Account.distributed:deposit(amount)
  if type(amount) ~= "number" or amount <= 0 then error("a deposit must be a positive number") end
  self:emit { amount = amount } -- returns once the event is on disk, then applies it
  return self.balance
end

function Account.distributed:withdraw(amount)
  if type(amount) ~= "number" or amount <= 0 then error("a withdrawal must be a positive number") end
  if amount > self.balance then error(("only %d left"):format(self.balance)) end
  self:emit { amount = -amount }
  return self.balance
end

function Account.distributed:statement()
  return { owner = self.owner, balance = self.balance, events = self.history, seq = self:last_seq() }
end

return Account
