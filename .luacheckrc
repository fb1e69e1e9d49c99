-- luacheck (Debian's lua-check): make test runs it over lib/, tests/, bench/, examples/ and scripts/.
std = "luajit"
max_line_length = 120
-- Distributed functions and hooks take `self` whether they use it or not.
self = false
-- Specs and benchmarks hold long literal requests and commands.
files["tests/"] = { std = "+busted", max_line_length = 140 }
files["bench/"] = { max_line_length = 140 }
exclude_files = { "tests/tmp/", "tests/js/node_modules/" }
