-- The README and docs/ as specs: every code block is marked for what it is, Lua compiles, and what
-- a reader is told to run runs as written and prints what the docs say.
local async = require "helpers.async"
local docs = require "helpers.docs"
local sh = require "helpers.shell"

local files = { "README.md" }
for path in sh.capture("ls docs/*.md 2>/dev/null"):gmatch("[^\n]+") do files[#files + 1] = path end

for _, path in ipairs(files) do
  describe(path, function()
    local blocks = docs.blocks(path)

    it("marks every code block as a file, commands to run, or not runnable and why", function()
      local problems = {}
      for _, b in ipairs(blocks) do
        local m = b.mark
        if m == nil then
          problems[#problems + 1] = ("line %d: no <!-- doc: file NAME | run | skip WHY --> above it"):format(b.line)
        elseif m.kind ~= "file" and m.kind ~= "run" and m.kind ~= "skip" then
          problems[#problems + 1] = ("line %d: unknown mark '%s'"):format(b.line, m.kind)
        elseif (m.kind == "file" or m.kind == "skip") and m.arg == "" then
          problems[#problems + 1] = ("line %d: `%s` needs %s"):format(b.line, m.kind,
            m.kind == "file" and "a name" or "a reason")
        end
      end
      assert.equal("", table.concat(problems, "\n"))
    end)

    it("has Lua that compiles", function()
      local problems = {}
      for _, b in ipairs(blocks) do
        if b.lang == "lua" then
          local _, err = loadstring(b.body, "=" .. path .. ":" .. b.line)
          if err then problems[#problems + 1] = err end
        end
      end
      assert.equal("", table.concat(problems, "\n"))
    end)

    it("runs what it tells the reader to run, as written", async(function()
      local d = docs.start(path)
      local ok, err = pcall(function()
        for _, b in ipairs(blocks) do
          if b.mark and b.mark.kind == "file" then d:write_file(b.mark.arg, b.body) end
          if b.mark and b.mark.kind == "run" then d:run(b) end
        end
      end)
      d:finish()
      assert(ok, err)
    end, 600))
  end)
end
