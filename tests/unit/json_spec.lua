-- JSON for the tools: exact integers, escaping, arrays and objects.
local atoll = require "atoll"
local json = require "atoll.util.json"

describe("json", function()
  it("writes integers exactly up to 2^53, and floats that read back the same", function()
    assert.equal("9007199254740992", json.encode(2 ^ 53))
    assert.equal("-9007199254740992", json.encode(-2 ^ 53))
    assert.equal("2611785664025243", json.encode(2611785664025243))
    assert.equal("0.1", json.encode(0.1))
    assert.equal(1 / 3, tonumber(json.encode(1 / 3)))
    assert.equal("null", json.encode(0 / 0))
    assert.equal("null", json.encode(math.huge))
  end)

  it("escapes strings", function()
    assert.equal('"a\\"b\\\\c\\n\\t\\u0001"', json.encode('a"b\\c\n\t\1'))
    assert.equal('"ünï"', json.encode("ünï"))
  end)

  it("writes sequences as arrays and other tables as objects with sorted keys", function()
    assert.equal("[1,2,3]", json.encode { 1, 2, 3 })
    assert.equal('{"a":1,"b":[true,false]}', json.encode { b = { true, false }, a = 1 })
    assert.equal("{}", json.encode {})
    assert.equal("[]", json.encode(atoll.array()))
    assert.equal('{"1":"x","3":"y"}', json.encode { [1] = "x", [3] = "y" })
  end)

  it("writes refs as their text and refuses cycles", function()
    local t = {}
    t.self = t
    assert.has_error(function() json.encode(t) end, "a table that contains itself cannot be encoded as JSON")
  end)

  it("reads JSON with lua-cjson", function()
    assert.same({ a = { 1, 2 }, b = "c" }, json.decode('{"a":[1,2],"b":"c"}'))
    assert.equal(9007199254740992, json.decode("9007199254740992"))
    local v, err = json.decode("[1,")
    assert.is_nil(v)
    assert.truthy(err)
  end)
end)
