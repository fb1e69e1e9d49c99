-- Loaded by busted before any spec: atoll is required once, outside busted's
-- per-file insulation, so every spec file shares one runtime and one loop.
require "atoll"
-- The cluster services that define actor types of their own (a type is defined once per
-- process), loaded here too, so that any spec file may use them.
require "atoll.cluster.singleton"
require "atoll.cluster.virtual"
