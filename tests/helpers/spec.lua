-- Small things specs share.
local atoll = require "atoll"
local assert = require "luassert"

local M = {}

-- catch(fn, ...) -> the error fn raises; fails the spec if it does not raise.
function M.catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

-- fresh(name) -> a new actor type with a name no other spec uses
local n = 0
function M.fresh(name)
  n = n + 1
  return atoll.actor.define(name .. n)
end

-- journal(name, setup, teardown): for the spec file that calls it (passing busted's setup and
-- teardown, which are that file's own), the journal is SQLite in a directory of its own, made
-- before its specs and removed after them. (busted runs every unit spec in one process: if
-- another file opened the journal first, that one stays in use.)
function M.journal(name, setup, teardown)
  local tmp = require "helpers.tmp"
  local dir
  setup(function()
    dir = tmp.dir(name)
    pcall(require("atoll.persistence").configure, { journal = "sqlite:" .. dir .. "/journal.db" })
  end)
  teardown(function() tmp.remove(dir) end)
end

return M
