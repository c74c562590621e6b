# lmp -- Python's multiprocessing for Lua 5.4.
#
#   make              build ./lmp.so (so `lua5.4 -e 'require "lmp"'` works here)
#   make mpi          build ./lmp/mpi.so, the lmp.mpi module (Pool backend "mpi";
#                     needs Open MPI: sh scripts/deps.sh mpi)
#   make test         install missing Debian packages, build, run the busted suite
#                     in parallel (bin/lmp-busted; LMP_BUSTED_ARGS="-j 4" etc.)
#   make test-serial  the same suite under plain busted, one file after another
#   make demo         install what the demo needs, build, run examples/pool.lua
#   make asan         build lmp-asan/lmp.so with AddressSanitizer + UBSan (clang)
#   make test-asan    run the busted suite against lmp-asan/lmp.so (and lmp-asan/lmp/mpi.so)
#   make fuzz         build the libFuzzer harness lmp-fuzz/decode_fuzz
#   make fuzz-short   fuzz mp.decode for FUZZ_TIME seconds (default 60)
#   make fuzz-long    fuzz mp.decode for FUZZ_RUNS inputs (default 10^6)
#   make corpus       regenerate the seed corpus fuzz/corpus/ from fuzz/make_corpus.lua
#   make valgrind     run the core specs under valgrind
#   make valgrind-mpi run the MPI spec's main job with every rank under valgrind
#   make bench        run bench/run.lua $(BENCH_ARGS), e.g. BENCH_ARGS="W2 --runs 3"
#   make install      copy lmp.so (and lmp/mpi.so if built) to $(DESTDIR)$(PREFIX)/lib/lua/5.4
#   make clean
#
# Every variable below can be overridden on the command line,
# e.g. `make CC=clang LUA_INCDIR=/opt/lua/include`.

LUA        ?= lua5.4
LUA_INCDIR ?= /usr/include/lua5.4
LUA_LIB    ?= -llua5.4
PREFIX     ?= /usr/local
LUA_CMODDIR ?= $(PREFIX)/lib/lua/5.4
BUSTED     ?= busted
BUSTED_ARGS ?=
LMP_BUSTED ?= $(LUA) bin/lmp-busted
LMP_BUSTED_ARGS ?=
BENCH_ARGS ?=
CLANG      ?= clang
VALGRIND   ?= valgrind

# `CC ?= gcc` would never fire: make predefines CC as `cc`.
ifeq ($(origin CC),default)
CC = gcc
endif

WARNFLAGS  = -Wall -Wextra -Werror -pedantic -Wshadow -Wmissing-prototypes \
             -Wdeclaration-after-statement
CFLAGS     ?= -O2 -g -std=c99 -fPIC -fvisibility=hidden $(WARNFLAGS)
LDFLAGS    ?=

# Sources named *_mpi.c make the lmp.mpi module (lmp/mpi.so, linked with
# libmpi); every other src/*.c makes lmp.so, which never links libmpi.  The
# rockspecs follow the same rule (spec/install_spec.lua checks it).
SRC = $(sort $(filter-out %_mpi.c,$(wildcard src/*.c)))
MPI_SRC = $(sort $(wildcard src/*_mpi.c))
HDR = $(wildcard src/*.h)

# Open MPI's compile and link flags, from its wrapper (its include dirs as
# -isystem: -pedantic is for our code, not mpi.h).
MPICC      ?= mpicc
MPI_CFLAGS ?= $(patsubst -I%,-isystem %,$(shell $(MPICC) --showme:compile 2>/dev/null))
MPI_LIBS   ?= $(shell $(MPICC) --showme:link 2>/dev/null)
HAVE_MPI    = $(shell command -v $(MPICC) >/dev/null 2>&1 && echo yes)

# Sanitizer builds: same warnings as the release build but without -Werror
# (clang warns about things gcc does not; these builds exist for runtime
# checks, and the gcc build already enforces a warning-free tree).
SAN_FLAGS   = -fsanitize=address,undefined -fno-omit-frame-pointer \
              -fno-sanitize-recover=undefined
SAN_CFLAGS ?= -O1 -g -std=c99 -fPIC -fvisibility=hidden \
              $(filter-out -Werror,$(WARNFLAGS)) $(SAN_FLAGS)
FUZZ_CFLAGS ?= -O1 -g -std=c99 $(filter-out -Werror,$(WARNFLAGS)) \
              -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer \
              -fno-sanitize-recover=undefined
FUZZ_LIBS  ?= $(LUA_LIB) -lm -ldl

ASAN_DIR   = lmp-asan
FUZZ_DIR   = lmp-fuzz
FUZZ_BIN   = $(FUZZ_DIR)/decode_fuzz
FUZZ_TIME ?= 60
FUZZ_RUNS ?= 1000000
FUZZ_ARGS ?= -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

# Specs that valgrind runs (only those present).
VALGRIND_SPECS = $(wildcard spec/codec_spec.lua spec/process_spec.lua spec/pool_spec.lua \
                 spec/ipc_spec.lua)
VALGRIND_FLAGS ?= --leak-check=full --errors-for-leak-kinds=definite --keep-debuginfo=yes \
                  --error-exitcode=99 --trace-children=no

.PHONY: all mpi mpi-if-present asan-mpi-if-present deps test valgrind-mpi test-serial demo asan test-asan fuzz fuzz-short \
        fuzz-long corpus valgrind bench install uninstall clean

all: lmp.so

lmp.so: $(SRC) $(HDR)
	$(CC) $(CFLAGS) -I$(LUA_INCDIR) -Isrc -shared -o $@ $(SRC) $(LDFLAGS)

mpi: lmp/mpi.so

lmp/mpi.so: $(MPI_SRC) $(HDR)
	@if [ -z "$(HAVE_MPI)" ]; then \
	  echo "make mpi: $(MPICC) not found; install Open MPI: sh scripts/deps.sh mpi" >&2; exit 1; fi
	@mkdir -p lmp
	$(CC) $(CFLAGS) $(MPI_CFLAGS) -I$(LUA_INCDIR) -Isrc -shared -o $@ $(MPI_SRC) \
	  $(MPI_LIBS) $(LDFLAGS)

# the specs use lmp.mpi when it can be built here, and say why not if not
mpi-if-present:
	@if [ -n "$(HAVE_MPI)" ]; then $(MAKE) --no-print-directory lmp/mpi.so; \
	 else echo "note: Open MPI not installed: backend \"mpi\" specs will be pending" >&2; fi

deps:
	@sh scripts/deps.sh test asan

# Each target checks its packages before it builds (a fresh machine has no gcc).
test:
	@sh scripts/deps.sh test
	@$(MAKE) --no-print-directory lmp.so mpi-if-present
	$(LMP_BUSTED) $(LMP_BUSTED_ARGS) $(BUSTED_ARGS)

test-serial:
	@sh scripts/deps.sh test
	@$(MAKE) --no-print-directory lmp.so mpi-if-present
	$(BUSTED) --lua=$(LUA) $(BUSTED_ARGS)

demo:
	@sh scripts/deps.sh demo
	@$(MAKE) --no-print-directory lmp.so
	$(LUA) examples/pool.lua

# ---------------------------------------------------------------------------
# AddressSanitizer + UndefinedBehaviorSanitizer.
#
# lua5.4 itself is not instrumented, so the ASan runtime (which also carries
# the UBSan handlers) must be the first library loaded: it is LD_PRELOADed
# from clang's resource dir (`clang -print-file-name=libclang_rt.asan-x86_64.so`).
#
# Specs load "./lmp.so" or "<dir of the spec>/../lmp.so" (and put that first
# on package.cpath themselves), so the suite runs inside lmp-asan/, a shadow
# of the repository made by `cp -Rs`: real directories, every file a symlink
# to the real one, and lmp-asan/lmp.so the sanitized build.  (Symlinked
# directories would not do: the kernel resolves lmp-asan/spec/.. to the
# repository root.)  LUA_CPATH_5_4 also points there, for the fresh `lua5.4`
# processes that specs start from other directories.
#
# ASAN_OPTIONS:
#   detect_leaks=0      LD_PRELOAD reaches every program the specs start, and
#                       LeakSanitizer fails those: coreutils `cp` run by
#                       install_spec exits 1 with a leak report, and so would
#                       the compilers luarocks runs.  Leaks are valgrind's job
#                       (`make valgrind`, definite leaks only).
#   handle_segv=0, handle_sigbus=0, handle_sigfpe=0
#                       the specs crash workers on purpose and check that the
#                       parent sees the signal (-11, "signal 11"); with ASan's
#                       handler the child would print a report and exit(86).
#                       Memory errors are still caught by the shadow checks,
#                       which do not rely on SIGSEGV.
#   log_path=...        reports go to files, one per process: a forked child
#                       that dies of a report only fails a task in its parent,
#                       and its stderr may be a pipe nobody shows.  test-asan
#                       fails if any report file exists afterwards.
#   halt_on_error=1, abort_on_error=0, exitcode=86
#                       stop at the first error with a recognisable status.
# UBSAN_OPTIONS: halt on the first report, with a stack, into the same logs.
# ---------------------------------------------------------------------------
ASAN_LOGDIR  = $(CURDIR)/$(ASAN_DIR)/logs
ASAN_OPTS    = detect_leaks=0:handle_segv=0:handle_sigbus=0:handle_sigfpe=0:abort_on_error=0:halt_on_error=1:exitcode=86:log_path=$(ASAN_LOGDIR)/asan
UBSAN_OPTS   = print_stacktrace=1:halt_on_error=1:log_path=$(ASAN_LOGDIR)/ubsan

asan: $(ASAN_DIR)/lmp.so

$(ASAN_DIR)/lmp.so: $(SRC) $(HDR)
	@mkdir -p $(ASAN_DIR)
	$(CLANG) $(SAN_CFLAGS) -I$(LUA_INCDIR) -Isrc -shared -o $@ $(SRC) $(LDFLAGS)

# lmp.mpi sanitized too (test-asan puts it at lmp-asan/lmp/mpi.so); Open MPI
# itself is not instrumented
$(ASAN_DIR)/mpi.so: $(MPI_SRC) $(HDR)
	@mkdir -p $(ASAN_DIR)
	$(CLANG) $(SAN_CFLAGS) $(MPI_CFLAGS) -I$(LUA_INCDIR) -Isrc -shared -o $@ $(MPI_SRC) \
	  $(MPI_LIBS) $(LDFLAGS)

asan-mpi-if-present:
	@if [ -n "$(HAVE_MPI)" ]; then $(MAKE) --no-print-directory $(ASAN_DIR)/mpi.so; \
	 else echo "note: Open MPI not installed: backend \"mpi\" specs will be pending" >&2; fi

test-asan:
	@sh scripts/deps.sh test asan
	@$(MAKE) --no-print-directory $(ASAN_DIR)/lmp.so asan-mpi-if-present
	@rt=$$($(CLANG) -print-file-name=libclang_rt.asan-x86_64.so); \
	 if [ ! -f "$$rt" ]; then \
	   echo "test-asan: clang's ASan runtime not found (install libclang-rt-14-dev)" >&2; exit 1; fi; \
	 busted=$$(command -v $(BUSTED)) || { echo "test-asan: $(BUSTED) not found" >&2; exit 1; }; \
	 find $(ASAN_DIR) -mindepth 1 -maxdepth 1 ! -name lmp.so ! -name mpi.so -exec rm -rf {} +; \
	 for f in * .[!.]*; do \
	   case "$$f" in .git|lmp.so|lmp|$(ASAN_DIR)|$(FUZZ_DIR)) continue ;; esac; \
	   [ -e "$$f" ] && cp -Rs "$(CURDIR)/$$f" "$(ASAN_DIR)/"; \
	 done; \
	 if [ -f $(ASAN_DIR)/mpi.so ]; then mkdir -p $(ASAN_DIR)/lmp && \
	   ln -sf ../mpi.so $(ASAN_DIR)/lmp/mpi.so; fi; \
	 rm -rf $(ASAN_LOGDIR); mkdir -p $(ASAN_LOGDIR); \
	 cd $(ASAN_DIR) || exit 1; \
	 echo "cd $(ASAN_DIR) && LD_PRELOAD=$$rt ASAN_OPTIONS=$(ASAN_OPTS) UBSAN_OPTIONS=$(UBSAN_OPTS) LUA_CPATH_5_4='$(CURDIR)/$(ASAN_DIR)/?.so;;' $(LUA) $$busted --ignore-lua $(BUSTED_ARGS)"; \
	 LD_PRELOAD=$$rt ASAN_OPTIONS=$(ASAN_OPTS) UBSAN_OPTIONS=$(UBSAN_OPTS) \
	 LUA_CPATH_5_4='$(CURDIR)/$(ASAN_DIR)/?.so;;' \
	   $(LUA) $$busted --ignore-lua $(BUSTED_ARGS); st=$$?; \
	 if ls $(ASAN_LOGDIR)/* >/dev/null 2>&1; then \
	   for f in $(ASAN_LOGDIR)/*; do echo "=== $$f"; cat "$$f"; done; \
	   echo "test-asan: sanitizer reports above (also in $(ASAN_DIR)/logs/)" >&2; exit 1; fi; \
	 exit $$st

# ---------------------------------------------------------------------------
# libFuzzer harness for mp.decode.  New inputs go to lmp-fuzz/corpus (first
# directory), so the committed seed corpus fuzz/corpus/ is only read; crash
# reproducers land in lmp-fuzz/.  Reproduce one with
#   lmp-fuzz/decode_fuzz lmp-fuzz/crash-<sha>
# ---------------------------------------------------------------------------
fuzz: $(FUZZ_BIN)

$(FUZZ_BIN): fuzz/decode_fuzz.c $(SRC) $(HDR)
	@mkdir -p $(FUZZ_DIR)
	$(CLANG) $(FUZZ_CFLAGS) -I$(LUA_INCDIR) -Isrc -o $@ fuzz/decode_fuzz.c $(SRC) $(FUZZ_LIBS)

fuzz-short: $(FUZZ_BIN)
	@mkdir -p $(FUZZ_DIR)/corpus
	$(FUZZ_BIN) -max_total_time=$(FUZZ_TIME) $(FUZZ_ARGS) \
	  -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus fuzz/corpus

fuzz-long: $(FUZZ_BIN)
	@mkdir -p $(FUZZ_DIR)/corpus
	$(FUZZ_BIN) -runs=$(FUZZ_RUNS) $(FUZZ_ARGS) \
	  -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus fuzz/corpus

corpus: lmp.so
	rm -f fuzz/corpus/*
	$(LUA) fuzz/make_corpus.lua fuzz/corpus

# ---------------------------------------------------------------------------
# valgrind: busted is a Lua script (`#!/usr/bin/env lua`), so it is run by
# lua5.4 directly (--ignore-lua: no re-exec through a shell that valgrind
# would not follow).  Forked children stay under valgrind; exec'd ones do not,
# and a child's definite leak makes it exit 99.  --keep-debuginfo keeps
# lmp.so's symbols for leaks reported after lua_close has dlclose'd it.
# Debian 12's valgrind 3.19 prints "unhandled syscall 434" (pidfd_open) and
# fails it with ENOSYS: noise, as long as lmp falls back.
# ---------------------------------------------------------------------------
valgrind:
	@sh scripts/deps.sh test valgrind
	@$(MAKE) --no-print-directory lmp.so
	@if [ -z "$(VALGRIND_SPECS)" ]; then echo "valgrind: no core specs in spec/ yet" >&2; exit 1; fi
	busted=$$(command -v $(BUSTED)) && \
	$(VALGRIND) $(VALGRIND_FLAGS) $(LUA) $$busted --ignore-lua $(BUSTED_ARGS) $(VALGRIND_SPECS)

# The MPI spec's main job (spec/fixtures/mpi/job.lua main) with every rank
# under valgrind.  busted is not used: it would put mpirun, not the ranks,
# under valgrind.  Open MPI, PMIx and hwloc report errors and leaks of their
# own that openmpi-valgrind.supp does not cover, so every rank exits 99 here;
# scripts/valgrind_ours.lua keeps the records whose innermost frame outside
# libc is lmp's code, and the target fails on any of those, or if the job
# did not run to its end (joined=true).
VALGRIND_MPI_DIR = $(CURDIR)/lmp-valgrind-mpi
valgrind-mpi:
	@sh scripts/deps.sh test valgrind mpi
	@$(MAKE) --no-print-directory lmp.so lmp/mpi.so
	@rm -rf $(VALGRIND_MPI_DIR); mkdir -p $(VALGRIND_MPI_DIR)
	-OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
	OMPI_MCA_btl_vader_single_copy_mechanism=none \
	timeout -s KILL 600 mpirun -n 3 --oversubscribe $(VALGRIND) $(VALGRIND_FLAGS) \
	  --suppressions=/usr/share/openmpi/openmpi-valgrind.supp \
	  --log-file=$(VALGRIND_MPI_DIR)/rank.%q{OMPI_COMM_WORLD_RANK}.log \
	  $(LUA) spec/fixtures/mpi/job.lua main $(VALGRIND_MPI_DIR) > $(VALGRIND_MPI_DIR)/out 2>&1
	@grep -q "^joined=true" $(VALGRIND_MPI_DIR)/out || \
	  { cat $(VALGRIND_MPI_DIR)/out; echo "valgrind-mpi: the job did not finish" >&2; exit 1; }
	$(LUA) scripts/valgrind_ours.lua $(VALGRIND_MPI_DIR)/rank.*.log

bench:
	@sh scripts/deps.sh bench
	@$(MAKE) --no-print-directory lmp.so
	$(LUA) bench/run.lua $(BENCH_ARGS)

install: lmp.so
	mkdir -p $(DESTDIR)$(LUA_CMODDIR)
	cp lmp.so $(DESTDIR)$(LUA_CMODDIR)/lmp.so
	if [ -f lmp/mpi.so ]; then mkdir -p $(DESTDIR)$(LUA_CMODDIR)/lmp && \
	  cp lmp/mpi.so $(DESTDIR)$(LUA_CMODDIR)/lmp/mpi.so; fi

uninstall:
	rm -f $(DESTDIR)$(LUA_CMODDIR)/lmp.so $(DESTDIR)$(LUA_CMODDIR)/lmp/mpi.so

clean:
	rm -rf lmp.so lmp $(ASAN_DIR) $(FUZZ_DIR) lmp-valgrind-mpi
