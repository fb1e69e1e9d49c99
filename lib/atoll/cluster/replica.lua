-- The receptionist's entries of one node: changes applied in sequence order, gaps found, whole sets replacing them.
--
-- A replica holds what one run of one node (its owner: an address and an
-- incarnation) lists under which keys: { [key] = { [ref] = type name } }.
-- The owner numbers its changes 1, 2, 3... from its start, so a replica at
-- `seq` holds exactly the owner's set after its change `seq` (0: nothing was
-- ever listed). A change is applied only right after the one before it; an
-- older one is ignored, and a newer one means some were lost: the caller
-- asks the owner for its whole set, which comes in parts and replaces the
-- replica at once. This module is pure: no network, clock or membership, so
-- that the ordering rules are tested alone (tests/unit/replica_spec.lua).
--
-- `emit(event_type, key, ref)`, when given, hears every entry that appears
-- ("added") or goes ("removed"), in the order the replica changes.
local runtime = require "atoll.runtime"

local M = {}

M.MAX_KEY = 200           -- bytes in a key
M.MAX_TYPE = 200          -- bytes in a type name, as other nodes send it
M.MAX_ENTRIES = 100000    -- entries a node may list of its own actors, so also in a replica
M.PART = 1000             -- entries per part of a whole set
M.MAX_PARTS = math.ceil(M.MAX_ENTRIES / M.PART) + 1

local REF_ADDR, REF_INC = runtime.REF_ADDR, runtime.REF_INC
local is_ref = runtime.is_ref
local floor = math.floor

-- new(address, incarnation) -> an empty replica of that run of that node
function M.new(address, incarnation)
  return { address = address, incarnation = incarnation, seq = 0, count = 0, keys = {}, incoming = nil }
end

-- valid_key(key) -> whether key may list actors: a string of 1 to MAX_KEY bytes
function M.valid_key(key)
  return type(key) == "string" and #key > 0 and #key <= M.MAX_KEY
end

local function whole(n, min, max)
  return type(n) == "number" and n == floor(n) and n >= min and n <= max
end

-- An entry from the wire: nil, or why it is refused. A replica lists only
-- actors of its owner's run: anything else is not the owner's to list.
local function entry_problem(r, key, ref, type_name)
  if not M.valid_key(key) then return "a key that is not a string of 1 to " .. M.MAX_KEY .. " bytes" end
  if not is_ref(ref) then return "an entry that is not an actor ref" end
  if ref[REF_ADDR] ~= r.address or ref[REF_INC] ~= r.incarnation then
    return "a ref to an actor of another node than its owner"
  end
  if type(type_name) ~= "string" or #type_name > M.MAX_TYPE then return "a type name that is not a short string" end
  return nil
end

-- add(r, key, ref, type_name [, emit]) -> true if ref was not listed under key
function M.add(r, key, ref, type_name, emit)
  local refs = r.keys[key]
  if refs == nil then
    refs = {}
    r.keys[key] = refs
  elseif refs[ref] ~= nil then
    return false
  end
  refs[ref] = type_name
  r.count = r.count + 1
  if emit then emit("added", key, ref) end
  return true
end

-- remove(r, key, ref [, emit]) -> true if ref was listed under key
function M.remove(r, key, ref, emit)
  local refs = r.keys[key]
  if refs == nil or refs[ref] == nil then return false end
  refs[ref] = nil
  if next(refs) == nil then r.keys[key] = nil end
  r.count = r.count - 1
  if emit then emit("removed", key, ref) end
  return true
end

-- listed(r, key, ref) -> whether ref is listed under key
function M.listed(r, key, ref)
  local refs = r.keys[key]
  return refs ~= nil and refs[ref] ~= nil
end

-- change(r, seq, op, key, ref, type_name [, emit]) -> outcome [, why]:
--   "applied"   the change was the next one, and is applied ("add" or "remove")
--   "stale"     the replica holds it already (or something newer)
--   "gap"       changes before it are missing: ask the owner for its whole set
--   "refused"   not a change (why says what is wrong). A malformed entry
--               with a good sequence number moves the replica past it, so
--               that one bad entry does not stall the owner's later changes.
function M.change(r, seq, op, key, ref, type_name, emit)
  if not whole(seq, 1, 2 ^ 53) then return "refused", "a sequence number that is not a positive integer" end
  if seq <= r.seq then return "stale" end
  if seq > r.seq + 1 then return "gap" end
  if op ~= "add" and op ~= "remove" then
    r.seq = seq
    return "refused", "an operation that is neither add nor remove"
  end
  if op == "remove" then type_name = "" end -- a removal names no type
  local problem = entry_problem(r, key, ref, type_name)
  if problem then
    r.seq = seq
    return "refused", problem
  end
  r.seq = seq
  if op == "remove" then
    M.remove(r, key, ref, emit)
  elseif r.count >= M.MAX_ENTRIES and not M.listed(r, key, ref) then
    return "refused", "more than " .. M.MAX_ENTRIES .. " entries"
  else
    M.add(r, key, ref, type_name, emit)
  end
  return "applied"
end

-- clear(r [, emit]): the replica forgets every entry (its owner is gone).
function M.clear(r, emit)
  local keys = r.keys
  r.keys, r.count, r.incoming = {}, 0, nil
  if emit then
    for key, refs in pairs(keys) do
      for ref in pairs(refs) do emit("removed", key, ref) end
    end
  end
end

-- set_part(r, seq, part, parts, entries [, emit]) -> outcome, refused entries, why:
-- part `part` of `parts` of the owner's whole set at `seq`; entries is a flat
-- array { key, ref, type name, key, ref, type name, ... }. Outcomes:
--   "partial"   kept; more parts are to come
--   "applied"   the last part: the whole set replaced the replica, and emit
--               heard the difference (what went first, then what came). A
--               whole set is the owner's word: it replaces even a replica at
--               a higher number (which only a forged message can have made:
--               an owner's messages come in order, over one link at a time)
--   "broken"    a part out of turn: the parts so far are dropped (ask again)
--   "refused"   not a part of a set (why says what is wrong)
-- Malformed entries are left out of the set and counted.
function M.set_part(r, seq, part, parts, entries, emit)
  if not whole(seq, 0, 2 ^ 53) or not whole(parts, 1, M.MAX_PARTS) or not whole(part, 1, parts)
    or type(entries) ~= "table" then
    r.incoming = nil
    return "refused", 0, "a part of a set whose numbers or entries are malformed"
  end
  local n = #entries
  if n % 3 ~= 0 or n > 3 * M.PART then
    r.incoming = nil
    return "refused", 0, "a part of a set that does not hold at most " .. M.PART .. " entries of three values"
  end
  if part == 1 then r.incoming = { seq = seq, parts = parts, next = 1, keys = {}, count = 0 } end
  local set = r.incoming
  if set == nil or set.seq ~= seq or set.parts ~= parts or set.next ~= part then
    r.incoming = nil
    return "broken", 0
  end
  local refused, why = 0, nil
  local keys = set.keys
  for i = 1, n, 3 do
    local key, ref, type_name = entries[i], entries[i + 1], entries[i + 2]
    local problem = entry_problem(r, key, ref, type_name)
    if problem == nil and set.count >= M.MAX_ENTRIES then problem = "more than " .. M.MAX_ENTRIES .. " entries" end
    if problem then
      refused, why = refused + 1, problem
    else
      local refs = keys[key]
      if refs == nil then
        refs = {}
        keys[key] = refs
      end
      if refs[ref] == nil then set.count = set.count + 1 end
      refs[ref] = type_name
    end
  end
  set.next = part + 1
  if part < parts then return "partial", refused, why end
  r.incoming = nil
  local old = r.keys
  r.keys, r.count, r.seq = keys, set.count, seq
  if emit then
    for key, refs in pairs(old) do
      local now = keys[key]
      for ref in pairs(refs) do
        if now == nil or now[ref] == nil then emit("removed", key, ref) end
      end
    end
    for key, refs in pairs(keys) do
      local before = old[key]
      for ref in pairs(refs) do
        if before == nil or before[ref] == nil then emit("added", key, ref) end
      end
    end
  end
  return "applied", refused, why
end

-- parts(r) -> the replica's entries as parts for set_part: an array of flat
-- arrays of at most PART entries each (one empty part for an empty set).
function M.parts(r)
  local out, list = {}, {}
  local n = 0
  for key, refs in pairs(r.keys) do
    for ref, type_name in pairs(refs) do
      list[n + 1], list[n + 2], list[n + 3] = key, ref, type_name
      n = n + 3
      if n == 3 * M.PART then
        out[#out + 1] = list
        list, n = {}, 0
      end
    end
  end
  if n > 0 or #out == 0 then out[#out + 1] = list end
  return out
end

return M
