-- A persistent bank account: run it twice and the balance carries over.
--   atoll run examples/bank/app.lua --data-dir /tmp/bank -- ann 25
-- deposits 25 into ann's account (a negative amount withdraws) and prints the statement, then
-- exits. With --listen the node keeps running, with the account registered as "account",
-- until Ctrl-C:
--   atoll call --node ... account deposit '[10]
local atoll = require "atoll"

local owner, amount = arg[1] or "ann", tonumber(arg[2] or "0")
local account = atoll.spawn("account", owner) -- recovers before it answers
atoll.register("account", account)

local before = account:statement()
print(("%s had %d after %d events"):format(owner, before.balance, before.events))
if amount > 0 then
  account:deposit(amount)
elseif amount < 0 then
  local ok, err = pcall(account.withdraw, account, -amount)
  if not ok then print("refused: " .. tostring(err.message or err)) end
end
local after = account:statement()
print(("%s has %d after %d events"):format(owner, after.balance, after.events))
if arg[3] == "--exit" then atoll.exit(0) end
