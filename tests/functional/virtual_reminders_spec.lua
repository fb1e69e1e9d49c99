-- Periodic reminders across a graceful hand-over and a crash of the node that runs the
-- reminders' singleton (tests/functional/apps/virtuals.lua): every due fires once, and the
-- firings go on from the next runner.
local async = require "helpers.async"
local members = require "helpers.members"
local nodes = require "helpers.cluster"
local tmp = require "helpers.tmp"
local wait = require "helpers.wait"

local await_all, seeing, addresses = members.await_all, members.seeing, members.addresses
local APP = "tests/functional/apps/virtuals.lua"

local function start(name, dir, join)
  local extra = { "--data-dir", dir }
  if join then extra[#extra + 1] = "--join" extra[#extra + 1] = join end
  return members.start(name, extra, { app = APP, env = { VIRTUAL_PERSISTENT = "1" } })
end

local firings = require("helpers.vchurn").firings

local function runner(views)
  for _, v in ipairs(views) do
    if v.p:stderr():find("singleton atoll.reminders: running here") then return v end
  end
end

describe("durable reminders", function()
  before_each(function() nodes.self() end)

  for _, how in ipairs { "SIGTERM", "SIGKILL" } do
    it("fire each due of periodic reminders once and go on after a " .. how .. " of the runner",
      async(function()
        local host = require "atoll.c.host"
        local dir = tmp.dir("vremind")
        local views = { start("vm1", dir) }
        for i = 2, 3 do views[i] = start("vm" .. i, dir, views[1].address) end
        await_all(views, seeing(addresses(views), "up"), 15, "all up")
        local d = nodes.named(views[2].address, "driver", 30)
        for id = 1, 10 do d:remind(id, "tick", { every = 1 }) end
        local r
        wait.retry(function()
          r = runner(views)
          return r ~= nil and #firings(views) >= 10
        end, 10, "the reminders to run and fire")
        r.p:kill(how)
        r.p:wait(20)
        local t_kill = host.wall() / 1000
        -- Every id fires again, from the next runner, at least twice after the runner went.
        local function fired_after(seconds)
          local last = {}
          for _, f in ipairs(firings(views)) do last[f.id] = math.max(last[f.id] or 0, f.wall) end
          for id = 1, 10 do
            if (last[tostring(id)] or 0) <= t_kill + seconds then return false end
          end
          return true
        end
        wait.retry(function() return fired_after(0) end, 15, "the reminders to fire again after the " .. how)
        local t_back = host.wall() / 1000 - t_kill
        wait.retry(function() return fired_after(t_back + 1) end, 5, "the next period's firings")
        local per, dups = {}, {}
        for _, f in ipairs(firings(views)) do
          local k = f.id .. "@" .. ("%.3f"):format(f.due)
          if per[k] then dups[#dups + 1] = k .. " on " .. per[k] .. " and " .. f.node end
          per[k] = f.node
        end
        assert.same({}, dups)
        for _, v in ipairs(views) do if v ~= r then v.p:kill("SIGKILL") v.p:wait(5) end end
        tmp.remove(dir)
      end, 90))
  end
end)
