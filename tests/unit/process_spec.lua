-- Child processes (atoll.process): several tasks may wait on one process at once.
local atoll = require "atoll"
local process = require "atoll.process"
local async = require "helpers.async"

describe("a child process", function()
  it("can be read on stdout and stderr by two tasks while a third waits for its exit", async(function()
    local p = assert(process.spawn { "sh", "-c",
      "echo out1; echo err1 >&2; sleep 0.05; echo out2; echo err2 >&2; exit 3" })
    local out, err = atoll.future(), atoll.future()
    atoll.task(function()
      local lines = {}
      for _ = 1, 2 do lines[#lines + 1] = p:read_line(5) end
      out:set(table.concat(lines, ","))
    end)
    atoll.task(function()
      local lines = {}
      for _ = 1, 2 do lines[#lines + 1] = p:read_line(5, "stderr") end
      err:set(table.concat(lines, ","))
    end)
    assert.equal(3, p:wait(5))
    assert.equal("out1,out2", out:wait(5))
    assert.equal("err1,err2", err:wait(5))
    assert.same({ nil, "eof" }, { p:read_line(1) })
  end))

  it("gives each waiting task its own deadline", async(function()
    local p = assert(process.spawn { "sh", "-c", "sleep 0.3; echo late" })
    local early = atoll.future()
    atoll.task(function() early:set({ p:read_line(0.02) }) end)
    assert.equal("late", p:read_line(5))
    assert.same({ nil, "timeout" }, early:wait(5))
    p:wait(5)
  end))
end)
