-- Processes in mount namespaces of their own, so that a spec can change what a node sees of the
-- file system (a read-only data directory, another /etc/hosts) without touching the machine's.
local M = {}

local flags = false -- not probed yet

-- flags() -> the unshare flags that give a mount namespace here: -m as root, -rm (with a user
-- namespace) otherwise. Raises, saying so, on a machine that refuses both.
function M.flags()
  if flags == false then
    flags = nil
    for _, f in ipairs { "-m", "-rm" } do
      local ok = os.execute("unshare " .. f .. " --propagation private true 2>/dev/null")
      if ok == 0 or ok == true then
        flags = f
        break
      end
    end
  end
  assert(flags, "this test needs a mount namespace (unshare -m or -rm), which this machine refuses")
  return flags
end

-- command(script) -> a command array that runs the shell script in a new mount namespace. End
-- the script with `exec ...` so that the process is the program, and a signal reaches it.
function M.command(script)
  return { "unshare", M.flags(), "--propagation", "private", "sh", "-c", script }
end

-- quote(s) -> s as one shell word
M.quote = require("helpers.shell").quote

return M
