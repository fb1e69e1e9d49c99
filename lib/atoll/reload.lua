-- Hot reload: new code for live actors, keeping their state and mailboxes; rolls back on failure.
--
-- A reload runs between messages (from a loop callback, never inside a
-- handler), so no message is lost or handled twice: the queue is not touched.
-- The module file is compiled and run with define() creating staged types;
-- each staged type's functions then replace the canonical type's in place, so
-- every live actor runs the new code from its next message. If the new type
-- has migrate(), it runs once per live actor, on the actor's state, before
-- that actor's next message. Any failure - a compile error, an error while
-- loading, a migrate that raises - restores the old functions and every
-- actor's state as it was, and is logged with file and line.

local host = require "atoll.c.host"
local actor = require "atoll.actor"
local runtime = require "atoll.runtime"

local M = {}

local R_STATE, R_TYPE = runtime.R_STATE, runtime.R_TYPE
local DEBOUNCE_MS = 15 -- editors write a file in several steps; wait for the last

local listeners = {}   -- fn(event) called after each reload attempt
local sources = {}     -- path -> source text last loaded (to skip no-op writes)
local watchers = {}    -- dir -> fswatch handle
local watching = false
local pending = {}     -- path -> debounce timer

local function log(level, msg)
  host.log(level, "reload", msg)
end

local function read_file(path)
  local f = io.open(path, "rb")
  if f == nil then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Copies a table deeply, keeping metatables and shared structure (a backup
-- of an actor's state that migrate cannot touch).
local function deep_copy(v, seen)
  if type(v) ~= "table" then return v end
  if seen[v] then return seen[v] end
  local c = {}
  seen[v] = c
  for k, x in pairs(v) do c[deep_copy(k, seen)] = deep_copy(x, seen) end
  return setmetatable(c, getmetatable(v))
end

local function replace_contents(dst, src)
  for k in pairs(dst) do dst[k] = nil end
  for k, v in pairs(src) do dst[k] = v end
end

-- Fields of a type that belong to the runtime, not to the module's code.
local function internal(k)
  return type(k) == "string" and k:sub(1, 2) == "__"
end

local function snapshot_type(T)
  local code, dist = {}, {}
  for k, v in pairs(T) do
    if not internal(k) and k ~= "distributed" then code[k] = v end
  end
  for k, v in pairs(T.distributed) do dist[k] = v end
  return { code = code, distributed = dist }
end

local function install_code(T, snap)
  for k in pairs(T) do
    if not internal(k) and k ~= "distributed" then rawset(T, k, nil) end
  end
  for k, v in pairs(snap.code) do rawset(T, k, v) end
  local dist = T.distributed
  for k in pairs(dist) do rawset(dist, k, nil) end
  for k, v in pairs(snap.distributed) do rawset(dist, k, v) end
end

local function notify(event)
  for _, fn in ipairs(listeners) do
    local ok, err = pcall(fn, event)
    if not ok then log("error", "reload listener failed: " .. tostring(err)) end
  end
end

local function fail(info, message)
  log("error", "reload of " .. (info.name or info.path) .. " failed, old code kept: " .. message)
  notify({ module = info.name, path = info.path, ok = false, error = message })
  return false, message
end

-- Runs fn(...) in a coroutine of its own that atoll does not manage: a call,
-- a sleep or a yield inside it cannot suspend the reload halfway (which would
-- let other messages see half-migrated actors); it fails instead.
local function run_atomically(fn, ...)
  local co = coroutine.create(fn)
  local ok, err = coroutine.resume(co, ...)
  if not ok then return false, debug.traceback(co, tostring(err)) end
  if coroutine.status(co) ~= "dead" then
    return false, "it tried to suspend (a call, sleep or yield cannot run during a reload)"
  end
  return true, err
end
M.run_atomically = run_atomically

-- Runs migrate for every live actor of each type; all or nothing.
local function migrate_all(plan)
  local backups = {}
  for _, step in ipairs(plan) do
    local T, migrate = step.T, rawget(step.T, "migrate")
    if migrate then
      local old = step.old.code
      for _, rec in pairs(runtime.actors) do
        if rec[R_TYPE] == T then
          local state = rec[R_STATE]
          backups[#backups + 1] = { state, deep_copy(state, {}) }
          local prev = runtime.set_current(rec)
          local ok, err = run_atomically(migrate, state, old)
          runtime.set_current(prev)
          if not ok then
            for _, b in ipairs(backups) do replace_contents(b[1], b[2]) end
            return false, T.__name .. ":migrate raised for " .. runtime.actor_label(rec) .. ": "
              .. tostring(err), #backups
          end
        end
      end
    end
  end
  return true, nil, #backups
end

-- reload_module(info) -> true, event | false, message
local function reload_module(info, source)
  source = source or read_file(info.path)
  if source == nil then return fail(info, "cannot read " .. info.path) end
  local chunk, cerr = loadstring(source, "@" .. info.path)
  if chunk == nil then return fail(info, cerr) end
  runtime.running_as("reloading " .. info.path)
  local ok, res, staged = actor.stage(info.path, run_atomically, chunk, info.name, info.path)
  if not ok then return fail(info, tostring(res)) end

  -- Every type the module had must still be there; new ones are welcome.
  for _, name in ipairs(info.types) do
    if staged[name] == nil then
      return fail(info, "the new code no longer defines actor type " .. name
        .. " (live actors need it)")
    end
  end

  local plan = {}
  for name, S in pairs(staged) do
    local T = actor.types[name]
    if T and T.__file ~= info.path and T.__module ~= info.name then
      return fail(info, "actor type " .. name .. " is already defined in " .. tostring(T.__file))
    end
    plan[#plan + 1] = { name = name, T = T, S = S }
  end

  -- Swap the code in, then migrate; undo everything if a migrate fails.
  for _, step in ipairs(plan) do
    if step.T then
      step.old = snapshot_type(step.T)
      install_code(step.T, snapshot_type(step.S))
    end
  end
  local existing = {}
  for _, step in ipairs(plan) do
    if step.T then existing[#existing + 1] = step end
  end
  local mok, merr, migrated = migrate_all(existing)
  if not mok then
    for _, step in ipairs(existing) do install_code(step.T, step.old) end
    return fail(info, merr)
  end

  -- Types the new code adds become canonical.
  for _, step in ipairs(plan) do
    if step.T == nil then
      local S = step.S
      S.__module, S.__file, S.__source = info.name, info.path, info.path
      actor.types[step.name] = S
      info.types[#info.types + 1] = step.name
    end
  end
  -- require() keeps returning the canonical types: a module that returns
  -- one type already has it in package.loaded; one that returns a table of
  -- types gets a table of the canonical ones.
  local function canonical(v)
    if type(v) == "table" and rawget(v, "__name") and staged[v.__name] == v then
      return actor.types[v.__name]
    end
    return v
  end
  if type(res) == "table" and canonical(res) == res and info.name then
    local ret = {}
    for k, v in pairs(res) do ret[k] = canonical(v) end
    package.loaded[info.name] = ret
  end
  sources[info.path] = source
  local event = { module = info.name, path = info.path, ok = true, migrated = migrated }
  log("info", "reloaded " .. info.name .. " (" .. info.path .. ")"
    .. (migrated > 0 and (", migrated " .. migrated .. (migrated == 1 and " actor" or " actors")) or ""))
  notify(event)
  return true, event
end

-- reload(module_name) -> true, event | false, message
function M.reload(name)
  local info = actor.modules[name]
  if info == nil then
    return false, "no actor module named " .. tostring(name) .. " is loaded"
  end
  return reload_module(info)
end

function M.on_reload(fn)
  listeners[#listeners + 1] = fn
  return fn
end

function M.remove_listener(fn)
  for i, l in ipairs(listeners) do
    if l == fn then
      table.remove(listeners, i)
      return true
    end
  end
  return false
end

---------------------------------------------------------------------------
-- Watching files (atoll run --watch)
---------------------------------------------------------------------------

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function basename(path)
  return path:match("([^/]*)$")
end

local by_path = {} -- path as dir/base -> module info

local function consider(path)
  pending[path] = nil
  local info = by_path[path]
  if info == nil then return end
  local source = read_file(path)
  if source == nil then return end -- removed or mid-rename; a later event will tell
  if source == sources[path] then return end
  reload_module(info, source)
end

local function on_dir_event(dir, filename)
  if filename == nil then return end
  local path = dir .. "/" .. filename
  if by_path[path] == nil then return end
  local t = pending[path]
  if t then t:cancel() end
  -- The timer belongs to no actor: it runs between messages.
  local prev = runtime.set_current(nil)
  pending[path] = runtime.after(DEBOUNCE_MS / 1000, function() consider(path) end)
  runtime.set_current(prev)
end

local function watch_module(info)
  local dir, base = dirname(info.path), basename(info.path)
  local path = dir .. "/" .. base
  by_path[path] = info
  if sources[path] == nil then sources[path] = read_file(info.path) end
  if watchers[dir] then return end
  local fswatch = require "atoll.c.fswatch"
  local handle, err = fswatch.watch(dir, runtime.callback(function(filename)
    on_dir_event(dir, filename)
  end))
  if handle == nil then
    log("warn", err)
    return
  end
  watchers[dir] = handle
  log("debug", "watching " .. dir)
end

-- Starts watching the files of every actor module, now and as they load.
function M.watch()
  if watching then return end
  watching = true
  for _, info in pairs(actor.modules) do watch_module(info) end
  actor.on_module_loaded(function(info)
    sources[info.path] = read_file(info.path)
    watch_module(info)
  end)
end

function M.unwatch()
  watching = false
  actor.on_module_loaded(nil)
  for dir, h in pairs(watchers) do
    h:close()
    watchers[dir] = nil
  end
  for path, t in pairs(pending) do
    t:cancel()
    pending[path] = nil
  end
end

function M.watching()
  return watching
end

return M
