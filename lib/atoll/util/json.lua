-- JSON for atoll's tools: decoding by lua-cjson, encoding here, so integers up to 2^53
-- come out exact (lua-cjson and dkjson round them to 14 digits).
local M = {}

local cjson_ok, cjson = pcall(require, "cjson")
-- host/utf8.c's validator, which the HTTP binding exposes with where a string stops being UTF-8.
local utf8_valid = require("atoll.c.http").utf8_valid
-- lua-cjson's marker for arrays, in versions that have one.
local cjson_array_mt = cjson_ok and cjson.array_mt or false

M.null = cjson_ok and cjson.null or setmetatable({}, { __tostring = function() return "null" end })

local ArrayMT -- atoll.ARRAY, set by atoll init to avoid a require loop
function M.set_array_mt(mt)
  ArrayMT = mt
end

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function number(n)
  if n ~= n or n == math.huge or n == -math.huge then return "null" end
  if n == math.floor(n) and math.abs(n) <= 2 ^ 53 then return ("%.0f"):format(n) end
  local s = ("%.17g"):format(n)
  -- the shortest of the two that reads back the same
  local short = ("%.15g"):format(n)
  if tonumber(short) == n then s = short end
  return s
end

local function is_array(t)
  local n = #t
  local count = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then return false end
    count = count + 1
  end
  local mt = getmetatable(t)
  return count == n and (n > 0 or (mt ~= nil and (mt == ArrayMT or mt == cjson_array_mt)))
end

local encode_value

local function encode_table(t, depth, seen, out)
  if seen[t] then error("a table that contains itself cannot be encoded as JSON", 0) end
  if depth > 64 then error("tables nested deeper than 64 levels cannot be encoded as JSON", 0) end
  seen[t] = true
  if is_array(t) then
    out[#out + 1] = "["
    for i = 1, #t do
      if i > 1 then out[#out + 1] = "," end
      encode_value(t[i], depth + 1, seen, out)
    end
    out[#out + 1] = "]"
  else
    out[#out + 1] = "{"
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for i, k in ipairs(keys) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = quote(type(k) == "number" and number(k) or tostring(k))
      out[#out + 1] = ":"
      encode_value(t[k], depth + 1, seen, out)
    end
    out[#out + 1] = "}"
  end
  seen[t] = nil
end

function encode_value(v, depth, seen, out)
  local t = type(v)
  if v == nil or v == M.null then
    out[#out + 1] = "null"
  elseif t == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif t == "number" then
    out[#out + 1] = number(v)
  elseif t == "string" then
    out[#out + 1] = quote(v)
  elseif t == "table" then
    local mt = getmetatable(v)
    if mt and mt.__tostring and mt ~= ArrayMT and mt ~= cjson_array_mt then
      out[#out + 1] = quote(tostring(v)) -- refs and other objects: their text
    else
      encode_table(v, depth, seen, out)
    end
  else
    out[#out + 1] = quote(tostring(v))
  end
end

-- encode(value) -> JSON text. Keys are sorted, so output is stable.
function M.encode(v)
  local out = {}
  encode_value(v, 0, {}, out)
  return table.concat(out)
end

-- utf8_error(text) -> nil when text is UTF-8, else "not valid UTF-8 at byte offset N" (N from 0).
-- JSON text is UTF-8 (RFC 8259, 8.1): decode refuses anything else, and what sends JSON to a
-- client checks it with this, since encode passes a string's bytes through as they are.
function M.utf8_error(text)
  local ok, at = utf8_valid(text)
  if ok then return nil end
  return ("not valid UTF-8 at byte offset %d"):format(at)
end

-- decode(text) -> value | nil, message, kind ("utf8": the text is not UTF-8, and the message says
-- where; "syntax": it is not JSON). lua-cjson passes bytes through unchecked, so UTF-8 is
-- checked first.
function M.decode(text)
  if not cjson_ok then return nil, "lua-cjson is not installed" end
  if type(text) == "string" then
    local bad = M.utf8_error(text)
    if bad then return nil, bad, "utf8" end
  end
  local ok, v = pcall(cjson.decode, text)
  if not ok then return nil, tostring(v), "syntax" end
  return v
end

return M
