# redlock-c. `make` builds the libraries and the command; `make test` runs
# every suite against real redis-server processes it starts itself.
# `make TLS=openssl` adds TLS (tls_openssl.c, -lssl -lcrypto) to the library
# and the command, in build/tls unless BUILD is given, so plain and TLS
# objects never mix. Plain `make` compiles no TLS code and needs no TLS
# library.

CC      ?= cc
PREFIX  ?= /usr/local
DESTDIR ?=
TLS     ?=
ifeq ($(TLS),openssl)
BUILD   ?= build/tls
else ifneq ($(TLS),)
$(error TLS=$(TLS): the TLS transport that comes with redlock-c is OpenSSL's: make TLS=openssl)
endif
BUILD   ?= build

WARN    := -std=c11 -Wall -Wextra -Wpedantic
CFLAGS  ?= -O2 -g
ALL_CFLAGS := $(WARN) $(CFLAGS)

VERSION_MAJOR := $(shell sed -n 's/^\#define REDLOCK_VERSION_MAJOR \([0-9]*\).*/\1/p' redlock.h)
VERSION       := $(shell sed -n 's/^\#define REDLOCK_VERSION "\(.*\)"/\1/p' redlock.h)

# The library's sources and headers. CMakeLists.txt reads these two lines:
# adding a file to the library is one word here, for both builds.
LIB_SRC  := redlock.c resp.c net.c
LIB_HDR  := redlock.h redlock_transport.h scripts.h resp.h net.h
# The optional fourth translation unit: the OpenSSL transport.
TLS_SRC  := tls_openssl.c
ifeq ($(TLS),openssl)
TLS_CFLAGS := $(shell pkg-config --cflags openssl 2>/dev/null)
TLS_LIBS   := $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)
TLS_DEFS   := -DREDLOCK_WITH_TLS
PC_REQUIRES := libssl libcrypto
LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/%.o) $(TLS_SRC:%.c=$(BUILD)/%.o)
else
LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/%.o)
endif
STATIC   := $(BUILD)/libredlock.a
SONAME   := libredlock.so.$(VERSION_MAJOR)
SHARED   := $(BUILD)/libredlock.so.$(VERSION)

CLI_SRC  := $(wildcard cli/*.c)
CLI      := $(if $(CLI_SRC),$(BUILD)/redlock,)

CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lm -lrt -lpthread)

# tests/test_tls.c needs the TLS build: plain `make test` runs it through
# `make test-tls` (a TLS build in $(BUILD)/tls).
TEST_SRC := $(filter-out $(if $(TLS),,tests/test_tls.c),$(wildcard tests/test_*.c))
# Fixtures linked into every test binary and the benchmark.
FX_SRC   := tests/fixture.c tests/fx_cluster.c tests/fx_tls.c tests/fx_proxy.c tests/fx_sentinel.c
FX_HDR   := $(FX_SRC:.c=.h)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# make test SUITES="test_lock test_conn": only these suites (every one by
# default); SKIP_SUITES="test_cli": all but these
SUITES   ?=
SKIP_SUITES ?=
RUN_TESTS := $(filter-out $(SKIP_SUITES:%=$(BUILD)/tests/%),\
               $(if $(strip $(SUITES)),$(filter $(SUITES:%=$(BUILD)/tests/%),$(TESTS)),$(TESTS)))
# The fault harness (docs/safety-torture.md): linked into test_torture, the
# short run that `make test` includes, and into `make torture`'s program.
TORTURE_SRC := tests/torture.c
TORTURE_HDR := tests/torture.h
TORTURE_SECONDS ?= 60
# LIBUV_EXAMPLE=no leaves out the libuv adapter example (a cross build has
# no libuv for the target); the suites then skip running it.
LIBUV_EXAMPLE ?= yes
EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,\
                $(filter-out $(if $(TLS),,examples/tls.c) $(if $(filter no,$(LIBUV_EXAMPLE)),examples/libuv.c),\
                    $(wildcard examples/*.c)))

# A cross build (make cross) runs target programs through an emulator: EMU
# prefixes the programs make itself runs (qemu-s390x-static, say), and the
# suites start the command and the examples from FX_RUN_DIR, where make
# cross puts scripts that run them under EMU. Both are plain otherwise.
EMU        ?=
FX_RUN_DIR ?= $(abspath $(BUILD))

.PHONY: all static test tests torture test-tls valgrind-tls check-exports test-packaging test-sanitize \
        test-valgrind test-docs test-man functions-file \
        examples demo bench fuzz fuzz-replay install uninstall clean deps lint format FORCE cross size

all: $(STATIC) $(SHARED) $(BUILD)/libredlock.so $(CLI) $(BUILD)/scripts.ok

# The shared library exports the redlock_* API (REDLOCK_API) and nothing else.
LIB_CFLAGS := -fPIC -fvisibility=hidden -DREDLOCK_BUILDING

$(BUILD)/%.o: %.c $(LIB_HDR) | $(BUILD)/.dirs
	$(CC) $(ALL_CFLAGS) $(LIB_CFLAGS) $(TLS_CFLAGS) -c $< -o $@

# A stamp, not the directory: $(BUILD) may exist already as the parent of
# another tree (build/tls, build/cross/...) without its own subdirectories.
$(BUILD)/.dirs:
	@mkdir -p $(BUILD)/tests $(BUILD)/examples && touch $@

$(STATIC): $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(SHARED): $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,$(SONAME) $^ $(TLS_LIBS) -o $@

$(BUILD)/libredlock.so: $(SHARED)
	ln -sf libredlock.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

$(BUILD)/redlock: $(CLI_SRC) $(wildcard cli/*.h) $(STATIC) redlock.h redlock_transport.h
	$(CC) $(ALL_CFLAGS) $(TLS_DEFS) -I. $(CLI_SRC) $(STATIC) $(TLS_LIBS) -o $@

# A fully static `redlock` command linked against musl (Debian: musl-tools),
# for machines that have no compiler or a different libc. Stripped.
MUSL_CC    ?= musl-gcc
STATIC_CLI := $(BUILD)/static/redlock

static: $(STATIC_CLI)

$(STATIC_CLI): $(CLI_SRC) $(LIB_SRC) $(LIB_HDR)
	@command -v $(MUSL_CC) >/dev/null 2>&1 || \
	    { echo "make static needs $(MUSL_CC): apt-get install musl-tools" >&2; exit 1; }
	@mkdir -p $(dir $@)
	$(MUSL_CC) $(WARN) $(CFLAGS) -static -s -I. $(CLI_SRC) $(LIB_SRC) -o $@

# The SHA1s in scripts.h match its script texts, and the shipped function
# library is the one redlock.c builds from them (no Redis needed).
$(BUILD)/scripts.ok: tests/sha1check.c scripts.h $(wildcard functions/*.lua) | $(BUILD)/.dirs
	$(CC) $(ALL_CFLAGS) -I. tests/sha1check.c -o $(BUILD)/sha1check
	$(EMU) $(BUILD)/sha1check
	@touch $@

# After a script changed (and the library's version with it): write the
# shipped library file from scripts.h.
functions-file: tests/sha1check.c scripts.h | $(BUILD)/.dirs
	mkdir -p functions
	$(CC) $(ALL_CFLAGS) -I. tests/sha1check.c -o $(BUILD)/sha1check
	$(EMU) $(BUILD)/sha1check --write

# ---- examples and tests ---------------------------------------------------------

examples: $(EXAMPLES)

# Build every suite without running it (CI's warning check compiles them too),
# and the torture program.
tests: $(TESTS) $(BUILD)/torture

# The libuv adapter example needs libuv (libuv1-dev, which tests/deps.sh
# installs); the library never links it.
$(BUILD)/examples/libuv: examples/libuv.c $(STATIC) redlock.h redlock_transport.h | $(BUILD)/.dirs
	$(CC) $(ALL_CFLAGS) -I. $$(pkg-config --cflags libuv) $< $(STATIC) $$(pkg-config --libs libuv) -o $@

$(BUILD)/examples/%: examples/%.c $(STATIC) redlock.h redlock_transport.h | $(BUILD)/.dirs
	$(CC) $(ALL_CFLAGS) -I. $< $(STATIC) $(TLS_LIBS) -o $@

# Linked into every suite: the redis-server fixture, the shared helpers, and
# a blocking driver for net.c's connections (the benchmark uses it too).
TEST_SUPPORT := $(FX_SRC) tests/testutil.c tests/netx.c
TEST_SUPPORT_HDR := $(FX_HDR) tests/testutil.h tests/netx.h

# The support files are compiled once per build tree, not into each suite
# (they need none of the suites' -D paths).
TEST_SUPPORT_OBJ := $(TEST_SUPPORT:tests/%.c=$(BUILD)/tests/obj/%.o)
TORTURE_OBJ := $(TORTURE_SRC:tests/%.c=$(BUILD)/tests/obj/%.o)
$(BUILD)/tests/obj/%.o: tests/%.c $(TEST_SUPPORT_HDR) $(TORTURE_HDR) $(LIB_HDR) | $(BUILD)/.dirs
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(TLS_DEFS) $(TLS_CFLAGS) -I. -Itests $(CHECK_CFLAGS) -c $< -o $@

$(BUILD)/tests/%: tests/%.c $(TEST_SUPPORT_OBJ) $(TEST_SUPPORT_HDR) $(STATIC) $(LIB_HDR) | $(BUILD)/.dirs
	$(CC) $(ALL_CFLAGS) $(TLS_DEFS) $(TLS_CFLAGS) -I. -Itests $(CHECK_CFLAGS) \
	    -DFX_EXAMPLES_DIR='"$(FX_RUN_DIR)/examples"' -DFX_BUILD_DIR='"$(FX_RUN_DIR)"' \
	    -DFX_SRC_DIR='"$(abspath .)"' $(if $(filter no,$(LIBUV_EXAMPLE)),-DFX_NO_LIBUV_EXAMPLE) \
	    $< $(TEST_SUPPORT_OBJ) $(STATIC) $(CHECK_LIBS) $(TLS_LIBS) -o $@

$(BUILD)/tests/test_torture: tests/test_torture.c $(TORTURE_OBJ) $(TORTURE_HDR) $(TEST_SUPPORT_OBJ) \
                             $(TEST_SUPPORT_HDR) $(STATIC) $(LIB_HDR) | $(BUILD)/.dirs
	$(CC) $(ALL_CFLAGS) $(TLS_DEFS) $(TLS_CFLAGS) -I. -Itests $(CHECK_CFLAGS) \
	    -DFX_BUILD_DIR='"$(FX_RUN_DIR)"' -DFX_SRC_DIR='"$(abspath .)"' \
	    $< $(TORTURE_OBJ) $(TEST_SUPPORT_OBJ) $(STATIC) $(CHECK_LIBS) $(TLS_LIBS) -o $@

# `make torture`: every scenario for TORTURE_SECONDS in all (TORTURE_SEED=
# replays a run, TORTURE_ONLY= picks scenarios by name), then the table.
$(BUILD)/torture: tests/torture_main.c $(TORTURE_SRC) $(TORTURE_HDR) $(FX_SRC) $(FX_HDR) \
                  $(STATIC) $(LIB_HDR) | $(BUILD)/.dirs
	$(CC) $(ALL_CFLAGS) -I. -Itests $< $(TORTURE_SRC) $(FX_SRC) $(STATIC) $(TLS_LIBS) -o $@

torture: deps all $(BUILD)/torture
	@TORTURE_SECONDS=$(TORTURE_SECONDS) $(BUILD)/torture

deps:
	@sh tests/deps.sh

# CMake (add_subdirectory, find_package), pkg-config and the static command,
# each built from a fresh install in a temp dir and run against a redis-server.
test-packaging:
	@bash tests/packaging.sh

# Cross builds, run under qemu-user (tests/cross.sh says how):
#   make cross ARCH=s390x [SUITES="test_codec test_lock"]
# ARCH: aarch64 armhf armhf-t64 riscv64 s390x mips musl; the tree is build/cross/ARCH.
cross:
	@if [ -z "$(ARCH)" ]; then echo "make cross ARCH=aarch64|armhf|armhf-t64|riscv64|s390x|mips|musl" >&2; exit 2; fi
	@sh tests/cross.sh $(ARCH) $(SUITES)

demo: all
	@bash cli/demo.sh

# Every suite runs even if one fails; the target fails if any did. A plain
# build runs the TLS suite too, from a TLS build of its own (make test-tls),
# and checks the documentation: its C code compiles, its man pages lint clean.
# SUITES= and SKIP_SUITES= pick suites; DOC_TESTS=no and TLS_TESTS=no leave
# those parts out.
test: deps all examples $(RUN_TESTS) fuzz-replay check-exports
	@failed=0; for t in $(RUN_TESTS); do \
	    echo "== $$t"; s=$$(date +%s); CK_DEFAULT_TIMEOUT=120 $$t || failed=1; \
	    echo "   ($$t: $$(($$(date +%s) - s)) s)"; \
	done; \
	$(if $(filter no,$(DOC_TESTS)),,$(MAKE) --no-print-directory test-docs test-man || failed=1;) \
	$(if $(TLS)$(filter no,$(TLS_TESTS)),,$(MAKE) --no-print-directory test-tls || failed=1;) \
	if [ $$failed -ne 0 ]; then echo "make test: some suites FAILED"; exit 1; fi; \
	echo "make test: all suites passed"

# Every ```c block of README.md and docs/*.md and every man page's EXAMPLE
# compiles (whole programs link against the static library).
test-docs: $(STATIC)
	@echo "== tests/docs-code.sh"; CC="$(CC)" CFLAGS="$(CFLAGS)" sh tests/docs-code.sh $(BUILD)

# A man page for every public function, each lint clean (mandoc, groff -ww).
test-man:
	@echo "== tests/man-pages.sh"; sh tests/man-pages.sh

# The TLS suite against the library and the command built with TLS=openssl
# (in $(BUILD)/tls from a plain build), and that library's exports.
ifeq ($(TLS),openssl)
test-tls: deps all examples check-exports $(BUILD)/tests/test_tls
	@echo "== $(BUILD)/tests/test_tls"; CK_DEFAULT_TIMEOUT=120 $(BUILD)/tests/test_tls
else
test-tls:
	@$(MAKE) --no-print-directory TLS=openssl BUILD=$(BUILD)/tls test-tls
endif

# The ABI: the shared library exports redlock_* and nothing else.
check-exports: $(SHARED)
	@sh tests/check-exports.sh $(SHARED)

# The seed corpus and kept crash inputs, replayed with the normal compiler.
fuzz-replay: $(BUILD)/fuzz_parser_replay $(BUILD)/fuzz_url_replay
	@$(EMU) $(BUILD)/fuzz_parser_replay fuzz/corpus/parser/* $(wildcard fuzz/regressions/parser/*)
	@$(EMU) $(BUILD)/fuzz_url_replay fuzz/corpus/url/* $(wildcard fuzz/regressions/url/*)

$(BUILD)/fuzz_%_replay: fuzz/fuzz_%.c fuzz/replay.c $(STATIC) resp.h net.h | $(BUILD)/.dirs
	$(CC) $(ALL_CFLAGS) -I. $< fuzz/replay.c $(STATIC) -o $@

# ASan + UBSan: the library, the tests and the examples rebuilt in their own tree
# (the docs checks are left to make test: they compile and lint text).
SAN_CC ?= $(shell command -v clang >/dev/null 2>&1 && echo clang || echo $(CC))
test-sanitize:
	$(MAKE) BUILD=$(BUILD)/san CC=$(SAN_CC) \
	    CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    DOC_TESTS=no test

# Core suites under valgrind memcheck, no fork, zero leaks and errors; the
# TLS suite too (from a TLS build), with its deadlines stretched 10-fold.
# No suppressions are needed, for OpenSSL either.
VALGRIND_SUITES ?= $(filter test_codec test_conn test_internals test_lock test_async test_functions test_transport test_stats test_tls test_sentinel,\
                     $(TEST_SRC:tests/%.c=%))
VALGRIND := valgrind -q --leak-check=full --error-exitcode=1 --errors-for-leak-kinds=definite,indirect
test-valgrind: deps all examples $(TESTS)
	@failed=0; for t in $(VALGRIND_SUITES); do \
	    echo "== valgrind $$t"; \
	    REDLOCK_TEST_SLOW=10 CK_FORK=no CK_DEFAULT_TIMEOUT=600 $(VALGRIND) $(BUILD)/tests/$$t \
	        || failed=1; \
	done; \
	$(if $(TLS),,$(MAKE) --no-print-directory TLS=openssl BUILD=$(BUILD)/tls valgrind-tls \
	    || failed=1;) \
	exit $$failed

ifeq ($(TLS),openssl)
valgrind-tls: deps all $(BUILD)/tests/test_tls
	@echo "== valgrind test_tls"; REDLOCK_TEST_SLOW=10 CK_FORK=no CK_DEFAULT_TIMEOUT=600 \
	    $(VALGRIND) $(BUILD)/tests/test_tls
endif

# ---- benchmarks ----------------------------------------------------------------------

# hiredis is a baseline for the benchmark only; the library never links it.
HIREDIS_CFLAGS := $(shell pkg-config --exists hiredis 2>/dev/null && echo -DHAVE_HIREDIS $$(pkg-config --cflags hiredis))
HIREDIS_LIBS   := $(shell pkg-config --exists hiredis 2>/dev/null && pkg-config --libs hiredis)
BENCH_ARGS ?=

# The fixtures and the connection driver; not testutil.c, which needs Check.
BENCH_SUPPORT := $(FX_SRC) tests/netx.c
$(BUILD)/bench: bench/bench.c $(BENCH_SUPPORT) $(TEST_SUPPORT_HDR) $(STATIC) $(LIB_HDR) | $(BUILD)/.dirs
	$(CC) $(ALL_CFLAGS) $(TLS_DEFS) -I. -Itests $(HIREDIS_CFLAGS) \
	    -DBENCH_BUILD_DIR='"$(abspath $(BUILD))"' \
	    bench/bench.c $(BENCH_SUPPORT) $(STATIC) $(HIREDIS_LIBS) $(TLS_LIBS) -o $@

# Prints a table and writes $(BUILD)/bench.json. BENCH_ARGS=--callgrind adds
# instructions per reply for the parsers; --quick for a short smoke run.
bench: deps all $(BUILD)/bench
	@pkg-config --exists hiredis 2>/dev/null || echo "bench: libhiredis-dev not installed; hiredis rows skipped (apt-get install libhiredis-dev)"
	@$(if $(TLS),,echo "bench: built without TLS; TLS rows skipped (make bench TLS=openssl)")
	@$(BUILD)/bench $(BENCH_ARGS)

# Code and data per library file at -Os and -O2 for x86-64 and armhf, heap
# per client, connection and lock handle, and the stack of a blocking cycle
# (bench/size.sh, bench/footprint.c). SIZE_ARGS=--allocs lists every
# allocation.
SIZE_ARGS ?=
size: deps
	@CC=$(CC) sh bench/size.sh $(SIZE_ARGS)

# ---- fuzzing (clang + libFuzzer) ----------------------------------------------------

FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
fuzz:
	@mkdir -p $(BUILD)/fuzz
	@for t in parser url; do \
	    $(FUZZ_CC) -g -O1 -fsanitize=fuzzer,address,undefined -I. fuzz/fuzz_$$t.c resp.c net.c \
	        -o $(BUILD)/fuzz/fuzz_$$t || exit 1; \
	    mkdir -p $(BUILD)/fuzz/corpus_$$t fuzz/regressions/$$t; \
	    echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	    $(BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=fuzz/regressions/$$t/ \
	        $(BUILD)/fuzz/corpus_$$t fuzz/corpus/$$t fuzz/regressions/$$t \
	        > $(BUILD)/fuzz/$$t.log 2>&1; rc=$$?; \
	    grep -E 'stat::number_of_executed_units|ERROR|SUMMARY|Test unit written' $(BUILD)/fuzz/$$t.log; \
	    if [ $$rc -ne 0 ]; then tail -40 $(BUILD)/fuzz/$$t.log; exit 1; fi; \
	done

# ---- install ---------------------------------------------------------------------------

# Written on every install: PREFIX may differ from the last one. The same
# template serves CMake's install.
$(BUILD)/redlock.pc: redlock.pc.in FORCE | $(BUILD)/.dirs
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$${prefix}/lib|' \
	    -e 's|@INCLUDEDIR@|$${prefix}/include|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@PC_REQUIRES@|$(PC_REQUIRES)|' redlock.pc.in > $@

FORCE:

install: all $(BUILD)/redlock.pc
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 redlock.h redlock_transport.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libredlock.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libredlock.so
	install -m 644 $(BUILD)/redlock.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	if [ -n "$(CLI)" ]; then install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/; fi
	if [ -f cli/redlock.1 ]; then install -d $(DESTDIR)$(PREFIX)/share/man/man1 && \
	    install -m 644 cli/redlock.1 $(DESTDIR)$(PREFIX)/share/man/man1/; fi
	install -d $(DESTDIR)$(PREFIX)/share/man/man3
	for f in man/man3/*.3; do \
	    if [ -L $$f ]; then ln -sf $$(readlink $$f) $(DESTDIR)$(PREFIX)/share/man/man3/$${f##*/}; \
	    else install -m 644 $$f $(DESTDIR)$(PREFIX)/share/man/man3/; fi; \
	done
	install -d $(DESTDIR)$(PREFIX)/share/redlock
	install -m 644 functions/*.lua $(DESTDIR)$(PREFIX)/share/redlock/

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/share/redlock
	rm -f $(DESTDIR)$(PREFIX)/include/redlock.h $(DESTDIR)$(PREFIX)/include/redlock_transport.h \
	    $(DESTDIR)$(PREFIX)/lib/libredlock.* \
	    $(DESTDIR)$(PREFIX)/lib/pkgconfig/redlock.pc $(DESTDIR)$(PREFIX)/bin/redlock \
	    $(DESTDIR)$(PREFIX)/share/man/man1/redlock.1 \
	    $(addprefix $(DESTDIR)$(PREFIX)/share/man/man3/,$(notdir $(wildcard man/man3/*.3)))

# ---- upkeep -------------------------------------------------------------------------------

# One clang-tidy per file, so that make -j runs them side by side.
LINT_TIDY := $(addprefix lint-tidy/,$(LIB_SRC) $(TLS_SRC))
.PHONY: lint-cppcheck $(LINT_TIDY)
lint: lint-cppcheck $(LINT_TIDY)
lint-cppcheck:
	cppcheck --quiet --enable=warning,style,performance,portability --error-exitcode=1 \
	    --inline-suppr --suppress=missingIncludeSystem $(LIB_SRC) $(TLS_SRC)
$(LINT_TIDY): lint-tidy/%:
	clang-tidy --quiet $* -- -std=c11

format:
	clang-format -i $(LIB_SRC) $(TLS_SRC) $(LIB_HDR) tests/*.c tests/*.h examples/*.c fuzz/*.c \
	    $(CLI_SRC)

clean:
	rm -rf $(BUILD)
