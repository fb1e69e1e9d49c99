-- Loaded by busted before any spec: atoll is required once, outside busted's
-- per-file insulation, so every spec file shares one runtime and one loop.
require "atoll"
