-- The codec: Lua values <-> MessagePack, exact and strict, with errors that name the bad value.
local atoll = require "atoll"
local codec = require "atoll.c.codec"
local async = require "helpers.async"

local function roundtrip(v)
  local bytes = assert(codec.encode(v))
  return codec.decode(bytes)
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

describe("codec", function()
  describe("scalars", function()
    it("round-trips nil, booleans and strings", function()
      assert.is_nil(roundtrip(nil))
      assert.is_true(roundtrip(true))
      assert.is_false(roundtrip(false))
      assert.equal("", roundtrip(""))
      assert.equal("héllo wörld", roundtrip("héllo wörld"))
    end)

    it("keeps every byte of binary strings", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      local s = table.concat(all)
      assert.equal(s, roundtrip(s))
      assert.equal("\0\0\255", roundtrip("\0\0\255"))
    end)

    it("encodes valid UTF-8 as str and other bytes as bin", function()
      assert.equal("a3616263", hex(codec.encode("abc")))
      assert.equal("c402ff00", hex(codec.encode("\255\0")))
      -- overlong, surrogate and truncated sequences are not text
      assert.equal("c4", hex(codec.encode("\192\128")):sub(1, 2))
      assert.equal("c4", hex(codec.encode("\237\160\128")):sub(1, 2))
      assert.equal("c4", hex(codec.encode("\226\130")):sub(1, 2))
    end)

    it("encodes integral numbers as integers, exactly up to 2^53", function()
      assert.equal("00", hex(codec.encode(0)))
      assert.equal("7f", hex(codec.encode(127)))
      assert.equal("ff", hex(codec.encode(-1)))
      assert.equal("cd0100", hex(codec.encode(256)))
      local max = 2 ^ 53
      assert.equal(max, roundtrip(max))
      assert.equal(-max, roundtrip(-max))
      assert.equal(max - 1, roundtrip(max - 1))
      assert.equal("cf0020000000000000", hex(codec.encode(max)))
    end)

    it("encodes fractions, infinities and NaN as floats", function()
      assert.equal(0.1, roundtrip(0.1))
      assert.equal(1 / 3, roundtrip(1 / 3))
      assert.equal(0.5, roundtrip(0.5))
      assert.equal("ca3f000000", hex(codec.encode(0.5)))
      assert.equal(math.huge, roundtrip(math.huge))
      assert.equal(-math.huge, roundtrip(-math.huge))
      local nan = roundtrip(0 / 0)
      assert.is_true(nan ~= nan)
      assert.equal(2 ^ 60, roundtrip(2 ^ 60)) -- beyond 2^53: a float, still exact
    end)

    it("keeps the sign of negative zero", function()
      local z = roundtrip(-0.0)
      assert.equal(0, z)
      assert.equal(-math.huge, 1 / z)
    end)
  end)

  describe("tables", function()
    it("encodes sequences as arrays and the rest as maps", function()
      assert.equal("93010203", hex(codec.encode({ 1, 2, 3 })))
      assert.equal("81a17801", hex(codec.encode({ x = 1 })))
      assert.same({ 1, 2, 3 }, roundtrip({ 1, 2, 3 }))
      assert.same({ a = 1, b = { c = "d" } }, roundtrip({ a = 1, b = { c = "d" } }))
    end)

    it("keeps holes and mixed keys as maps", function()
      local t = { 1, nil, 3 }
      assert.same({ [1] = 1, [3] = 3 }, roundtrip(t))
      assert.same({ 1, 2, x = "y" }, roundtrip({ 1, 2, x = "y" }))
      assert.same({ [2] = "b", [3] = "c" }, roundtrip({ [2] = "b", [3] = "c" }))
      assert.same({ [1.5] = true, [true] = false }, roundtrip({ [1.5] = true, [true] = false }))
    end)

    it("encodes an empty table as a map, and as an array when marked", function()
      assert.equal("80", hex(codec.encode({})))
      assert.equal("90", hex(codec.encode(atoll.array())))
      local back = roundtrip(atoll.array())
      assert.equal(atoll.ARRAY, getmetatable(back))
      assert.equal("90", hex(codec.encode(back)))
    end)

    it("copies shared subtables rather than refusing them", function()
      local shared = { 1 }
      local back = roundtrip({ a = shared, b = shared })
      assert.same({ 1 }, back.a)
      assert.same({ 1 }, back.b)
    end)

    it("round-trips deep and wide structures", function()
      local wide = {}
      for i = 1, 5000 do wide[i] = { i, tostring(i) } end
      assert.same(wide, roundtrip(wide))
      local deep = {}
      local t = deep
      for _ = 1, 30 do
        t.next = {}
        t = t.next
      end
      assert.same(deep, roundtrip(deep))
    end)
  end)

  describe("value lists", function()
    it("packs arguments with their count, nils included", function()
      local bytes = assert(codec.pack(1, nil, "x", nil))
      local a, b, c, d = codec.unpack(bytes)
      assert.equal(1, a)
      assert.is_nil(b)
      assert.equal("x", c)
      assert.is_nil(d)
      assert.equal(4, select("#", codec.unpack(bytes)))
      assert.equal(0, select("#", codec.unpack(assert(codec.pack()))))
    end)

    it("refuses more than MAX_VALUES values", function()
      local t = {}
      for i = 1, codec.MAX_VALUES + 1 do t[i] = i end
      local bytes, err = codec.pack(unpack(t))
      assert.is_nil(bytes)
      assert.matches("more than 250 values", err)
    end)
  end)

  describe("refusals name the path to the bad value", function()
    local function refuse(...)
      local bytes, err = codec.pack(...)
      assert.is_nil(bytes)
      return err
    end

    it("refuses functions", function()
      assert.equal("args[2].on_done: a function cannot be sent",
        refuse(1, { on_done = function() end }))
    end)

    it("refuses coroutines and userdata", function()
      assert.equal("args[1]: a coroutine cannot be sent", refuse(coroutine.create(print)))
      assert.equal("args[1].file: a userdata cannot be sent", refuse({ file = io.stdout }))
    end)

    it("names indexes, odd keys and nested paths", function()
      assert.equal("args[1][3].x: a function cannot be sent", refuse({ 1, 2, { x = print } }))
      assert.equal('args[1]["a key"]: a function cannot be sent', refuse({ ["a key"] = print }))
      assert.equal("args[1][2.5]: a function cannot be sent", refuse({ [2.5] = print }))
      assert.equal("args[1]: a table key of type function cannot be sent", refuse({ [print] = 1 }))
    end)

    it("refuses cycles", function()
      local t = { name = "loop" }
      t.self = t
      assert.equal("args[1].self: a table that contains itself cannot be sent", refuse(t))
      local a, b = {}, {}
      a.b, b.a = b, a
      assert.equal("args[1].b.a: a table that contains itself cannot be sent", refuse(a))
    end)

    it("refuses nesting deeper than the limit", function()
      local deep = {}
      local t = deep
      for _ = 1, 40 do
        t.next = {}
        t = t.next
      end
      local err = refuse(deep)
      assert.matches("nested deeper than 32 levels", err)
      assert.matches("^args%[1%]%.next%.next", err)
    end)

    it("refuses tables with metatables, whose methods would be lost", function()
      local obj = setmetatable({}, { __index = {} })
      assert.matches("a table with a metatable cannot be sent", refuse(obj))
    end)

    it("refuses messages over the size limit, and the limit can change", function()
      local old = codec.limits()
      codec.limits { max_bytes = 1024 }
      local ok, err = pcall(function()
        local msg = refuse(string.rep("x", 2000))
        assert.matches("larger than the limit of 1024 bytes", msg)
        assert.truthy(codec.pack(string.rep("x", 1000)))
      end)
      codec.limits(old)
      assert(ok, err)
      assert.same(old, codec.limits())
    end)

    it("uses 'result' for what a function returns", function()
      local bytes, err = codec.pack_results(1, print)
      assert.is_nil(bytes)
      assert.equal("result[2]: a function cannot be sent", err)
    end)
  end)

  describe("decoding refuses malformed input", function()
    local function bad(bytes, pattern)
      local ok, err = pcall(codec.decode, bytes)
      assert.is_false(ok)
      assert.equal("bad_argument", err.kind)
      assert.matches(pattern, err.message)
    end

    it("reports truncation", function()
      bad("\205\1", "ends early")
      bad("\218\0\10abc", "ends inside a string")
      bad("", "ends early")
    end)

    it("reports invalid type bytes and trailing bytes", function()
      bad("\193", "invalid type byte")
      bad("\1\2", "trailing bytes")
    end)

    it("refuses integers a Lua number cannot hold exactly", function()
      bad("\207\0\32\0\0\0\0\0\1", "beyond 2%^53")
      bad("\211\255\223\255\255\255\255\255\255", "beyond 2%^53")
    end)

    it("refuses containers that claim more elements than there are bytes", function()
      bad("\221\255\255\255\255", "claims more elements")
      bad("\223\127\255\255\255\1", "claims more elements")
    end)

    it("refuses nil and NaN map keys, unknown ext types, and too deep nesting", function()
      bad("\129\192\1", "map key is nil")
      bad("\129\203\127\248\0\0\0\0\0\0\1", "map key is NaN")
      bad("\212\5\0", "unsupported ext type 5")
      bad(string.rep("\145", 40) .. "\1", "nesting deeper")
    end)

    it("names MessagePack's timestamp and reserved ext types when refusing them", function()
      bad("\214\255\0\0\0\0", "ext type %-1: a MessagePack timestamp")
      bad("\212\128\0", "ext type %-128 %(reserved by MessagePack%)")
    end)

    it("offers a non-raising variant", function()
      local ok, err = codec.try_decode("\193")
      assert.is_false(ok)
      assert.matches("invalid type byte", err)
      local ok2, v = codec.try_decode(codec.encode({ 1 }))
      assert.is_true(ok2)
      assert.same({ 1 }, v)
    end)
  end)

  describe("actor refs", function()
    it("travel as an ext type and come back as the same ref", async(function()
      local T = atoll.actor.define "CodecRefProbe"
      function T.distributed:ping() return "pong" end
      local r = atoll.spawn(T)
      local bytes = assert(codec.encode({ who = r }))
      assert.truthy(bytes:find("\199", 1, true) or bytes:find("\216", 1, true)) -- ext 8 or fixext 16
      local back = codec.decode(bytes)
      assert.equal(r, back.who) -- interned: the same table
      assert.equal("pong", back.who:ping())
    end))
  end)

  describe("virtual refs", function()
    -- The metatable comes from atoll.cluster.virtual_ref, which atoll installs at start: the
    -- codec knows it before atoll.cluster.virtual is loaded.
    local VirtualRef = require("atoll.cluster.virtual_ref").Ref
    local function vref(type_name, id)
      return setmetatable({ type = type_name, id = id }, VirtualRef)
    end

    local function bad(bytes, pattern)
      local ok, err = pcall(codec.decode, bytes)
      assert.is_false(ok)
      assert.equal("bad_argument", err.kind)
      assert.matches(pattern, err.message)
      -- the same through a value list and the non-raising variants
      local okl, errl = codec.try_unpack("\145" .. bytes)
      assert.is_false(okl)
      assert.matches(pattern, errl)
    end

    -- ext 8 of type 2 around a payload
    local function ext(payload)
      return "\199" .. string.char(#payload) .. "\2" .. payload
    end

    it("travel as ext type 2: the type name's length and bytes, then the id's kind and the id",
      function()
        assert.equal(2, codec.EXT_VIRTUAL_REF)
        -- c7 0b 02: ext 8, 11 bytes, type 2; 06 "Player"; 01 (a string) "ann"
        assert.equal("c70b0206506c6179657201616e6e", hex(codec.encode(vref("Player", "ann"))))
        -- 00 (an integer): the id as 8 bytes, big-endian two's complement
        assert.equal("c70b020154" .. "00" .. "0000000000000007", hex(codec.encode(vref("T", 7))))
        assert.equal("c70b020154" .. "00" .. "ffffffffffffffff", hex(codec.encode(vref("T", -1))))
      end)

    it("come back with the virtual ref metatable, equal to the ref they were, without deps",
      function()
        local r = setmetatable({ type = "Player", id = "ann", deps = { team = "fish" }, timeout = 3 },
          VirtualRef)
        local back = roundtrip(r)
        assert.equal(VirtualRef, getmetatable(back))
        assert.is_true(back == r)
        assert.is_false(back == vref("Player", "bob"))
        assert.equal("Player", rawget(back, "type"))
        assert.equal("ann", rawget(back, "id"))
        -- deps and the timeout belong to the get, not to the name
        assert.is_nil(rawget(back, "deps"))
        assert.is_nil(rawget(back, "timeout"))
        assert.equal("virtual Player ann", tostring(back))
      end)

    it("keep integer ids exact to 2^53 and apart from the same digits as a string", function()
      for _, id in ipairs { 0, 1, -1, 127, -129, 2 ^ 32, 2 ^ 53, -2 ^ 53, 2 ^ 53 - 1 } do
        local back = roundtrip(vref("T", id))
        assert.equal("number", type(rawget(back, "id")))
        assert.equal(id, rawget(back, "id"))
      end
      local s = roundtrip(vref("T", "42"))
      assert.equal("string", type(rawget(s, "id")))
      assert.is_false(s == vref("T", 42))
      local long = string.rep("i", 200)
      assert.equal(long, rawget(roundtrip(vref(string.rep("t", 200), long)), "id"))
      assert.equal("\0\255", rawget(roundtrip(vref("T", "\0\255")), "id")) -- any bytes
    end)

    it("travel inside tables and value lists, as values and as map keys", function()
      local a, b = vref("T", "a"), vref("T", 2)
      local x, y = codec.unpack(assert(codec.pack({ list = { a, b } }, b)))
      assert.equal(VirtualRef, getmetatable(x.list[1]))
      assert.is_true(x.list[1] == a and x.list[2] == b and y == b)
      local keyed = roundtrip({ [a] = "first" })
      local k = next(keyed)
      assert.is_true(k == a)
      assert.equal("first", keyed[k])
    end)

    it("refuse to encode a name the decoder would refuse", function()
      local function refuse(v, pattern)
        local bytes, err = codec.pack(1, { who = v })
        assert.is_nil(bytes)
        assert.matches("^args%[2%]%.who: a virtual ref whose ", err)
        assert.matches(pattern, err)
      end
      refuse(vref("", 1), "type name is not a string of 1 to 200 bytes cannot be sent$")
      refuse(vref(string.rep("t", 201), 1), "type name is not a string of 1 to 200 bytes")
      refuse(vref(nil, 1), "type name is not a string")
      refuse(vref("T", ""), "id is not 1 to 200 bytes")
      refuse(vref("T", string.rep("i", 201)), "id is not 1 to 200 bytes")
      refuse(vref("T", 1.5), "not an integer within 2%^53")
      refuse(vref("T", 2 ^ 53 + 2), "not an integer within 2%^53")
      refuse(vref("T", 0 / 0), "not an integer within 2%^53")
      refuse(vref("T", {}), "id is neither a string nor an integer")
      refuse(vref("T", nil), "id is neither a string nor an integer")
    end)

    it("refuse malformed payloads with a clear error", function()
      bad(ext(""), "malformed virtual ref: no type name")
      bad(ext("\0\1x"), "malformed virtual ref: its type name is not 1 to 200 bytes")
      bad(ext("\201" .. string.rep("t", 201) .. "\1x"), "its type name is not 1 to 200 bytes")
      bad(ext("\5ab"), "malformed virtual ref: it ends before its id")
      bad(ext("\1T"), "it ends before its id")
      bad(ext("\1T\2x"), "its id is neither an integer %(0%) nor a string %(1%)")
      bad(ext("\1T\0\0\0\0\7"), "its integer id is not 8 bytes")
      bad(ext("\1T\0\0\0\0\0\0\0\0\0\7"), "its integer id is not 8 bytes")
      bad(ext("\1T\0\0\32\0\0\0\0\0\1"), "its integer id is beyond 2%^53")
      bad(ext("\1T\0\255\223\255\255\255\255\255\255"), "its integer id is beyond 2%^53")
      bad(ext("\1T\1"), "its string id is not 1 to 200 bytes")
      bad("\200\0\204\2\1T\1" .. string.rep("i", 201), "its string id is not 1 to 200 bytes")
      -- fixext forms are read as well, and refused alike when their bytes do not fit
      bad("\213\2\1T", "it ends before its id")
      -- the ext claims more bytes than the message holds
      bad("\199\20\2\1T\1x", "ends inside a string")
    end)

    it("fail cleanly on every truncation and on mutated bytes", function()
      local bytes = codec.bytes(assert(codec.pack(vref("Player", "ann"), { vref("T", -2 ^ 53) })))
      for n = 0, #bytes - 1 do
        local ok, err = codec.try_unpack(bytes:sub(1, n))
        assert.is_false(ok, "the first " .. n .. " bytes decoded")
        assert.is_string(err)
      end
      math.randomseed(20261202)
      for _ = 1, 20000 do
        local b = { bytes:byte(1, -1) }
        for _ = 1, math.random(1, 3) do b[math.random(#b)] = math.random(0, 255) end
        local r = { codec.try_unpack(string.char(unpack(b))) }
        if r[1] then
          -- what decodes is whole: every virtual ref in it encodes again
          for i = 2, table.maxn(r) do assert.truthy(codec.encode(r[i])) end
        else
          assert.matches("^cannot decode MessagePack at byte %d+: ", r[2])
        end
      end
    end)

    -- (that their calls reach the virtual actor: tests/unit/virtual_spec.lua, which loads it)
    it("are copies between actors of one node", async(function()
      local Keeper = atoll.actor.define "VCodecKeeper"
      function Keeper.distributed:keep(r)
        self.r = r
        return r
      end
      function Keeper.distributed:kept() return self.r end
      local k = atoll.spawn(Keeper)
      local mine = setmetatable({ type = "Player", id = 9, deps = { some = "deps" } }, VirtualRef)
      local back = k:keep(mine)
      assert.equal(VirtualRef, getmetatable(back))
      assert.is_true(back == mine)
      assert.is_false(rawequal(back, mine)) -- a copy each way, as from another node
      assert.is_nil(rawget(back, "deps"))
      assert.is_false(rawequal(k:kept(), back))
    end))
  end)

  describe("interoperability", function()
    local mpack = require "mpack" -- Debian's lua-mpack, a third-party implementation

    it("lua-mpack decodes what atoll encodes", function()
      local value = { name = "ann", scores = { 1, 2, 3 }, ratio = 0.25, ok = true, neg = -7,
                      big = 2 ^ 40, text = "ünï" }
      local bytes = codec.encode(value)
      local theirs = mpack.unpack(bytes)
      assert.same(value, theirs)
    end)

    it("atoll decodes what lua-mpack encodes", function()
      local value = { list = { "a", "b" }, n = 123456789, f = 1.5, nested = { deep = { x = -1 } } }
      assert.same(value, codec.decode(mpack.pack(value)))
    end)

    it("round-trips through both", function()
      local value = { 1, { 2, { 3, { k = "v" } } }, false }
      assert.same(value, codec.decode(mpack.pack(mpack.unpack(codec.encode(value)))))
    end)

    -- lua-mpack is built on the same libmpack as atoll, so it shares its
    -- bugs (libmpack 1.0.5 wrote -129 as d0 7f, read by everyone as 127).
    -- Python's msgpack shares no code with either.
    describe("with Python's msgpack, which shares no code with libmpack", function()
      local tmp = require "helpers.tmp"
      local sh = require "helpers.shell"
      local PYTHON = "/usr/bin/python3" -- Debian's, where python3-msgpack is installed

      -- Every width boundary and its neighbours, then random integers of
      -- every magnitude and random floats, from a fixed seed.
      local function values()
        local list = {}
        local function add(v) list[#list + 1] = v end
        for _, b in ipairs { 0, 5, 7, 8, 15, 16, 31, 32, 52, 53 } do
          local p = 2 ^ b
          for _, v in ipairs { p - 2, p - 1, p, p + 1, p + 2 } do
            if v <= 2 ^ 53 then
              add(v)
              add(-v)
            end
          end
        end
        for v = -40, 40 do add(v) end
        math.randomseed(20261201)
        for _ = 1, 300000 do
          local bits = math.random(0, 53)
          local v = (math.random(0, 2 ^ 26 - 1) * 2 ^ 27 + math.random(0, 2 ^ 27 - 1)) % (2 ^ bits)
          add(math.random() < 0.5 and -v or v)
        end
        for _, f in ipairs { 0.5, -0.5, -0.0, 1 / 0, -1 / 0, 0 / 0, 5e-324, -5e-324,
                             1.7976931348623157e308, 2 ^ 53 + 2, -(2 ^ 53 + 2), 2 ^ 63, -2 ^ 64,
                             0.1, 1e300, 3.4028234663852886e38 } do
          add(f)
        end
        for _ = 1, 100000 do
          local r = math.random()
          if r < 0.3 then
            add(math.random(-2 ^ 20, 2 ^ 20) / 2 ^ math.random(1, 20)) -- float32-exact
          elseif r < 0.6 then
            add((math.random() - 0.5) * 10 ^ math.random(-300, 300))
          else
            add((math.random() - 0.5) * 2 ^ math.random(-60, 60))
          end
        end
        return list
      end

      local function is_int(v)
        return v == math.floor(v) and v >= -2 ^ 53 and v <= 2 ^ 53 and not (v == 0 and 1 / v < 0)
      end

      local function describe_value(v)
        if v ~= v then return "f nan" end
        if v == 1 / 0 then return "f inf" end
        if v == -1 / 0 then return "f -inf" end
        if is_int(v) then return ("i %.0f"):format(v) end
        return ("f %.17g"):format(v)
      end

      local function same(a, b)
        if a ~= a then return b ~= b end
        return a == b and (a ~= 0 or 1 / a == 1 / b)
      end

      it("decodes what atoll encodes, every integer in its smallest form, and the reverse",
        function()
          assert.is_true(sh.run(PYTHON .. " -c 'import msgpack' 2>/dev/null"),
            "Debian's python3-msgpack is missing (tools/deps test installs it)")
          local list = values()
          assert.is_true(#list > 400000)
          local dir = tmp.dir("msgpack")
          local lines, encoded = {}, {}
          for i, v in ipairs(list) do
            lines[i] = describe_value(v)
            encoded[i] = assert(codec.encode(v))
          end
          tmp.write(dir .. "/values", table.concat(lines, "\n") .. "\n")
          tmp.write(dir .. "/encoded", table.concat(encoded))
          local out = sh.capture(("%s tests/helpers/msgpack_peer.py %s/values %s/encoded %s/theirs 2>&1")
            :format(PYTHON, dir, dir, dir))
          assert.matches("^" .. #list .. " values checked", out, 1)
          -- The reverse: Python's encoding of the same values, as one array.
          local theirs = codec.decode(assert(tmp.read(dir .. "/theirs")))
          tmp.remove(dir)
          assert.equal(#list, #theirs)
          local wrong = {}
          for i, v in ipairs(list) do
            if not same(v, theirs[i]) and #wrong < 20 then
              wrong[#wrong + 1] = lines[i] .. " came back as " .. tostring(theirs[i])
            end
          end
          assert.equal("", table.concat(wrong, "\n"))
        end)
    end)
  end)
end)
