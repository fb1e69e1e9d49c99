-- The spec node (node.lua), summing up shed unauthenticated connections every 2 s instead of
-- every 10 s, so that a flood of a few seconds shows its summaries.
require("atoll.c.transport").configure { report_interval = 2 }
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "node.lua")
