# atoll: build, test, demo, bench. `make test` and `make demo` install what
# they need from Debian's packages first (tools/deps), then build.

VERSION := 0.1.0
BUILD ?= build
CC ?= cc
OPT ?= -O2 -g
PKGS := luajit libuv mpack libsodium sqlite3 libpq nettle
# Debian ships these two without pkg-config files.
EXTRA_LIBS := -lhttp_parser -lwslay

# Evaluated when first used, after tools/deps has had its chance to install
# the packages pkg-config asks about.
PKG_CFLAGS = $(eval PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS)))$(PKG_CFLAGS)
PKG_LIBS = $(eval PKG_LIBS := $(shell pkg-config --libs $(PKGS)) $(EXTRA_LIBS))$(PKG_LIBS)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
ALL_CFLAGS = $(OPT) -std=c11 -D_GNU_SOURCE $(WARN) -DATOLL_VERSION='"$(VERSION)"' \
	$(PKG_CFLAGS) $(CFLAGS)
# -Wl,-E exports the embedded Lua library's luaJIT_BC_* symbols, which is how
# require finds it in the executable.
ALL_LDFLAGS = $(OPT) -Wl,-E $(LDFLAGS)

C_SRC := $(wildcard host/*.c bindings/*.c)
LUA_SRC := $(shell find lib -name '*.lua' | sort)
C_OBJ := $(C_SRC:%.c=$(BUILD)/obj/%.o)
LUA_OBJ := $(LUA_SRC:%.lua=$(BUILD)/obj/%.o)

# lib/atoll/init.lua -> atoll, lib/atoll/runtime.lua -> atoll.runtime
modname = $(patsubst %.init,%,$(subst /,.,$(patsubst lib/%.lua,%,$(1))))

.PHONY: all deps test unit functional demo bench asan asan-build fuzz fuzz-build format clean

all: $(BUILD)/atoll $(BUILD)/atoll-lua $(BUILD)/swimsim

deps:
	@tools/deps build

$(BUILD)/atoll: $(C_OBJ) $(LUA_OBJ)
	$(CC) -o $@ $(C_OBJ) $(LUA_OBJ) $(ALL_LDFLAGS) $(PKG_LIBS) -lm

# `atoll-lua` is atoll as a plain interpreter, for busted --lua=.
$(BUILD)/atoll-lua: $(BUILD)/atoll
	ln -sf atoll $@

$(BUILD)/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/lib/%.o: lib/%.lua | deps
	@mkdir -p $(dir $@)
	luajit -bg -n $(call modname,$<) $< $@

-include $(C_OBJ:.o=.d)

# What the specs send that a correct node never would (tests/hooks), as a module
# apart: the executable a user runs has no Lua function for it.
$(BUILD)/atoll_testhooks.so: tests/hooks/testhooks.c bindings/bindings.h host/transport.h \
		host/membership.h | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -shared -fPIC -o $@ $<

# The SWIM simulator (tests/sim): the membership core alone, on a virtual
# clock and network.
SIM_SRC := tests/sim/swimsim.c host/swim.c host/mpk.c host/buf.c
$(BUILD)/swimsim: $(SIM_SRC) host/swim.h host/mpk.h host/buf.h host/error.h | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(SIM_SRC) $(shell pkg-config --libs mpack) -lm

# Every test: the formatting and lint checks, unit specs inside the host,
# functional specs against real node processes, the leak check, and some
# fuzzing per target (FUZZ_SECONDS, whose default tests/run holds).
# Then the unit specs and the specs of the network's C (links, handshakes,
# SWIM, HTTP) again on the sanitizer build (`make asan` runs all of them so).
test:
	@tools/deps test
	@$(MAKE) --no-print-directory all $(BUILD)/atoll_testhooks.so fuzz-build asan-build
	@tests/run $(BUILD)/atoll
	@ATOLL_SANITIZED=1 tests/run build-asan/atoll unit network

unit functional:
	@tools/deps test
	@$(MAKE) --no-print-directory all $(BUILD)/atoll_testhooks.so
	@tests/run $(BUILD)/atoll $@

demo:
	@tools/deps demo
	@$(MAKE) --no-print-directory all
	@$(BUILD)/atoll lua examples/demo.lua $(BUILD)/atoll

bench:
	@tools/deps bench
	@$(MAKE) --no-print-directory all $(BUILD)/sqlite_raw
	@bench/run all

# The journal benchmark's peer: SQLite inserts alone, as the backend's ceiling.
$(BUILD)/sqlite_raw: bench/peers/sqlite_raw.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(shell pkg-config --libs sqlite3)

# The whole suite on an AddressSanitizer + UndefinedBehaviorSanitizer build.
asan:
	@tools/deps asan
	@$(MAKE) --no-print-directory asan-build
	@ATOLL_SANITIZED=1 tests/run build-asan/atoll

asan-build:
	@$(MAKE) --no-print-directory BUILD=build-asan CC=clang \
		OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		build-asan/atoll build-asan/atoll-lua build-asan/swimsim build-asan/atoll_testhooks.so

# The libFuzzer targets, with ASan and UBSan: frames, envelopes, handshakes
# and the codec; SWIM packets and states; HTTP requests and WebSocket frames; a link's input
# (handshake, then sealed frames, split, batched, corrupted). `make fuzz` runs each for
# FUZZ_SECONDS (10 minutes).
FUZZ_SRC := tests/fuzz/fuzz_frames.c host/frame.c host/codec.c host/handshake.c host/mpk.c \
	host/buf.c host/utf8.c host/error.c
FUZZ_SWIM_SRC := tests/fuzz/fuzz_swim.c host/swim.c host/mpk.c host/buf.c host/error.c
FUZZ_HTTP_SRC := tests/fuzz/fuzz_http.c host/http.c host/http_static.c host/http_ws.c host/buf.c \
	host/utf8.c host/log.c host/error.c
FUZZ_TRANSPORT_SRC := tests/fuzz/fuzz_transport.c host/transport.c host/frame.c host/handshake.c \
	host/codec.c host/mpk.c host/buf.c host/utf8.c host/log.c host/error.c
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-std=c11 -D_GNU_SOURCE $(PKG_CFLAGS)
fuzz-build: build/fuzz/fuzz_frames build/fuzz/fuzz_swim build/fuzz/fuzz_http build/fuzz/fuzz_transport
build/fuzz/fuzz_frames: $(FUZZ_SRC) $(wildcard host/*.h) | deps
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $(FUZZ_SRC) $(PKG_LIBS) -lm
build/fuzz/fuzz_swim: $(FUZZ_SWIM_SRC) $(wildcard host/*.h) | deps
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $(FUZZ_SWIM_SRC) $(PKG_LIBS) -lm
build/fuzz/fuzz_http: $(FUZZ_HTTP_SRC) $(wildcard host/*.h) | deps
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $(FUZZ_HTTP_SRC) $(PKG_LIBS) -lm
build/fuzz/fuzz_transport: $(FUZZ_TRANSPORT_SRC) $(wildcard host/*.h) | deps
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $(FUZZ_TRANSPORT_SRC) $(PKG_LIBS) -lm

fuzz:
	@tools/deps fuzz
	@$(MAKE) --no-print-directory all fuzz-build
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-600} tests/run $(BUILD)/atoll fuzz

format:
	clang-format -i host/*.c host/*.h bindings/*.c bindings/*.h tests/fuzz/*.c tests/hooks/*.c tests/sim/*.c \
		bench/peers/*.c

clean:
	rm -rf build build-asan
