-- Actor types: define(), the distributed-function table, and the loader that ties types to files.
local M = {}

-- Hooks the runtime calls on an actor; they cannot be distributed functions.
local HOOKS = {
  init = true, migrate = true, stopped = true, terminated = true,
  apply = true, persistence_id = true, snapshot = true, restore = true,
}
M.HOOKS = HOOKS

local types = {}        -- name -> type (the canonical table, stable across reloads)
local staging = nil     -- during a reload: name -> freshly defined type
local loading = nil     -- the module being loaded: { name = ..., path = ... }
local modules = {}      -- module name -> { name, path, types = { type names } }
local on_module_loaded = nil
M.types = types
M.modules = modules

-- Every distributed function name ever defined, kept for the life of the
-- node: the watchdog holds a pointer to the name of the method that runs,
-- which must outlive a reload that removes the method.
M.method_names = {}

-- Methods every actor instance has, unless its type defines one of the same name.
local Base = {}
M.Base = Base

local function valid_name(name)
  return type(name) == "string" and name:match("^[%a_][%w_%.]*$") ~= nil
end

local function guard_distributed(T, dist)
  return setmetatable(dist, {
    __index = Base,
    __newindex = function(t, k, v)
      if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
        error("distributed function names must be identifiers, got " .. tostring(k), 2)
      end
      if HOOKS[k] then
        error(T.__name .. "." .. k .. " is a hook, not a distributed function: define it as "
          .. "function " .. T.__name .. ":" .. k .. "(...)", 2)
      end
      if k:sub(1, 2) == "__" then error("names starting with __ are reserved", 2) end
      if v ~= nil and type(v) ~= "function" then
        error(T.__name .. ".distributed." .. k .. " must be a function", 2)
      end
      M.method_names[k] = true
      rawset(t, k, v)
    end,
  })
end

local function new_type(name, options)
  local dist = {}
  local T = {
    __name = name,
    __options = options or {},
    distributed = dist,
  }
  guard_distributed(T, dist)
  -- Instances look up: their own fields, then the type (hooks and helpers),
  -- then its distributed functions, then Base.
  setmetatable(T, { __index = dist, __tostring = function() return "actor type " .. name end })
  T.__instance_mt = { __index = T }
  if loading then
    T.__module = loading.name
    T.__file = loading.path
  end
  return T
end

-- define(name [, options]) -> a new actor type.
-- Fill it with hooks (function T:init(...)) and distributed functions
-- (function T.distributed:add(k)), then return it from the module.
function M.define(name, options)
  if not valid_name(name) then
    error("actor.define needs a type name like \"Counter\", got " .. tostring(name), 2)
  end
  if options ~= nil and type(options) ~= "table" then
    error("actor.define: options must be a table", 2)
  end
  if staging then
    if staging[name] then error("actor type " .. name .. " is defined twice in this module", 2) end
    local T = new_type(name, options)
    staging[name] = T
    return T
  end
  local existing = types[name]
  if existing then
    error(("actor type %s is already defined (in %s)"):format(name,
      existing.__file or existing.__source or "?"), 2)
  end
  local T = new_type(name, options)
  local info = debug.getinfo(2, "Sl")
  T.__source = info and (info.short_src .. ":" .. tostring(info.currentline)) or "?"
  types[name] = T
  if loading then table.insert(loading.types, name) end
  return T
end

function M.is_type(T)
  return type(T) == "table" and rawget(T, "__instance_mt") ~= nil and rawget(T, "__name") ~= nil
    and types[T.__name] == T
end

-- resolve(type_or_module_name) -> type | nil, message
function M.resolve(spec)
  if type(spec) == "table" then
    if M.is_type(spec) then return spec end
    return nil, "not an actor type (make one with actor.define)"
  end
  if type(spec) ~= "string" then return nil, "expected an actor type or a module name" end
  local ok, mod = pcall(require, spec)
  if not ok then return nil, mod end
  if M.is_type(mod) then return mod end
  local info = modules[spec]
  if info and #info.types == 1 then return types[info.types[1]] end
  local stdlib = { string = 1, table = 1, math = 1, io = 1, os = 1, coroutine = 1, debug = 1,
                   package = 1, bit = 1, jit = 1, ffi = 1 }
  if stdlib[spec] then
    return nil, "module " .. spec .. " is Lua's standard library of that name; give the actor "
      .. "module another name"
  end
  return nil, "module " .. spec .. " does not return an actor type"
end

---------------------------------------------------------------------------
-- The module loader: Lua files found on package.path load through here, so
-- each type knows its module and file (hot reload needs both).
---------------------------------------------------------------------------

local function loader(name)
  local path, err = package.searchpath(name, package.path)
  if path == nil then return err end
  local chunk, cerr = loadfile(path)
  if chunk == nil then error(cerr, 0) end
  return function(...)
    local info = { name = name, path = path, types = {} }
    local prev = loading
    loading = info
    local ok, res = pcall(chunk, ...)
    loading = prev
    if not ok then error(res, 0) end
    if #info.types > 0 then
      modules[name] = info
      if on_module_loaded then on_module_loaded(info) end
    end
    return res
  end
end

function M.install_loader()
  local loaders = package.loaders
  for _, l in ipairs(loaders) do
    if l == loader then return end
  end
  -- After package.preload (so C modules and the embedded library win), and
  -- before the stock Lua file searcher, which it replaces for .lua files.
  table.insert(loaders, 2, loader)
end

function M.on_module_loaded(fn)
  on_module_loaded = fn
end

---------------------------------------------------------------------------
-- Staging, for hot reload
---------------------------------------------------------------------------

-- Runs run(...) with define() creating fresh types instead of canonical ones.
-- `run` must not raise (it returns ok, result_or_error, like pcall).
-- Returns ok, result_or_error, staged types (name -> type).
function M.stage(path, run, ...)
  local prev_staging, prev_loading = staging, loading
  staging = {}
  loading = { name = nil, path = path, types = {} }
  local ok, res = run(...)
  local staged = staging
  staging, loading = prev_staging, prev_loading
  return ok, res, staged
end

return M
