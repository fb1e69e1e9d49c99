-- Real nodes for cluster specs, with the spec process as a node of the same cluster.
local atoll = require "atoll"
local host = require "atoll.c.host"
local cluster = require "atoll.cluster"
local node = require "helpers.node"

local M = {}

M.secret = "spec-secret-" .. host.pid()
M.app = "tests/functional/apps/node.lua"

-- The spec process listens too, so nodes can call back into it.
function M.self()
  if not cluster.started() then
    assert(cluster.start { listen = "127.0.0.1:0", secret = M.secret, name = "spec", allow_late = true })
  end
  return atoll.node().address
end

-- start(name [, extra args]) -> process, address. Waits for the node to
-- listen (it logs the address) and for its app to be ready.
function M.start(name, extra, opts)
  local args = { "run", (opts and opts.app) or M.app, "--listen", "127.0.0.1:0", "--name", name }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local env = { ATOLL_SECRET = M.secret }
  for k, v in pairs(opts and opts.env or {}) do env[k] = v end
  local p = node.start(args, { env = env })
  local seconds = require("helpers.wait").seconds(10)
  local _, address = p:expect("listening on (%S+)", seconds, "stderr")
  if not (opts and opts.no_ready) then p:expect("^ready$", seconds) end
  return p, address
end

-- named(address, name) -> a handle calling that node's actor registered as name
function M.named(address, name, seconds)
  return cluster.named(address, name, seconds)
end

return M
