# wisp: one non-recursive Makefile. Sources are discovered by location:
#   common/*/ jobs/*/ coordinator/ worker/  -> build/libwisp.a (every .c but *_main.c)
#   jobs/cli/wisp_main.c               -> build/bin/wisp
#   coordinator/coordinator_main.c     -> build/bin/wisp-coordinator
#   worker/worker_main.c               -> build/bin/wisp-worker
#   tests/test_*.c (+ tests/testutil.c) -> build/tests/test_*   (cmocka)
#   bench/bench_*.c                    -> build/bench/bench_*
#   tests/fuzz/fuzz_*.c                -> build/fuzz/bin/fuzz_*     (make fuzz, clang libFuzzer)
CC ?= cc
WISP_VERSION := 0.1.0
BUILD ?= build
PYTHON ?= /usr/bin/python3

PKGS := libzmq ompi-c openblas sndfile hdf5 cmocka soxr fftw3f libcjson
APT_PKGS := build-essential pkg-config libzmq3-dev libopenmpi-dev openmpi-bin \
            libopenblas-dev libsndfile1-dev libhdf5-dev libcmocka-dev libsoxr-dev \
            libfftw3-dev libcjson-dev hdf5-tools gnuplot-nox libdnnl-dev

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT ?= -O2
SAN ?=
CFLAGS := -std=c11 $(OPT) -g -Wall -Wextra -Werror -D_GNU_SOURCE -fno-math-errno \
          -DWISP_VERSION='"$(WISP_VERSION)"' -I. -Icommon -Ijobs $(PKG_CFLAGS) $(SAN) $(EXTRA_CFLAGS)
LDFLAGS := $(SAN)
# oneDNN (int8 linears, nn/qlinear.c) ships no pkg-config file in Debian 12
LDLIBS := $(PKG_LIBS) -ldnnl -lm -lpthread

LIB_SRCS := $(filter-out %_main.c,$(wildcard common/*/*.c jobs/*/*.c coordinator/*.c worker/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIB := $(BUILD)/libwisp.a

# A binary is built once its main file exists.
BINS := $(patsubst jobs/cli/wisp_main.c,$(BUILD)/bin/wisp,$(wildcard jobs/cli/wisp_main.c)) \
        $(patsubst coordinator/coordinator_main.c,$(BUILD)/bin/wisp-coordinator,$(wildcard coordinator/coordinator_main.c)) \
        $(patsubst worker/worker_main.c,$(BUILD)/bin/wisp-worker,$(wildcard worker/worker_main.c))

TEST_SRCS := $(wildcard tests/test_*.c)
TESTS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
TESTUTIL_OBJ := $(BUILD)/obj/tests/testutil.o

BENCH_SRCS := $(wildcard bench/bench_*.c)
BENCHES := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)

FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/bin/%)

.PHONY: all test asan bench bench-deps demo clean deps check-deps format-check unit integration \
        fuzz fuzz-long fuzz-bins
all: $(LIB) $(BINS) $(TESTS) $(BENCHES)

# Install the Debian packages when missing: as root with apt-get, otherwise print the line.
# gnuplot draws the PNGs of `wisp report` and `make demo`: installed with the rest, but
# a non-root build without it only warns (the summaries still print, without plots).
deps check-deps:
	@missing=0; pkg-config --exists $(PKGS) 2>/dev/null || missing=1; \
	command -v mpirun >/dev/null 2>&1 || missing=1; command -v cc >/dev/null 2>&1 || missing=1; \
	command -v h5dump >/dev/null 2>&1 || missing=1; \
	[ -f /usr/include/oneapi/dnnl/dnnl.h ] || missing=1; \
	plots=1; command -v gnuplot >/dev/null 2>&1 || plots=0; \
	if [ $$missing = 1 ] || [ $$plots = 0 ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "wisp: installing dependencies with apt-get"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PKGS) || exit 1; \
	  elif [ $$missing = 1 ]; then \
	    echo "wisp: missing libraries; run as root:"; \
	    echo "  apt-get install -y $(APT_PKGS)"; exit 1; \
	  else \
	    echo "wisp: gnuplot is not installed: reports and the demo will have no plots"; \
	    echo "  (as root: apt-get install -y gnuplot-nox)"; \
	  fi; \
	fi

V ?= 0
Q := $(if $(filter 1,$(V)),,@)

.SECONDARY:

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(filter 1,$(V)),,echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/obj/jobs/cli/wisp_main.o: $(wildcard jobs/cli/cmd_*.c)
$(BUILD)/bin/wisp: $(BUILD)/obj/jobs/cli/wisp_main.o $(LIB)
$(BUILD)/bin/wisp-coordinator: $(BUILD)/obj/coordinator/coordinator_main.o $(LIB)
$(BUILD)/bin/wisp-worker: $(BUILD)/obj/worker/worker_main.o $(LIB)
$(BINS):
	@mkdir -p $(dir $@)
	@$(if $(filter 1,$(V)),,echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TESTUTIL_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(filter 1,$(V)),,echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(filter 1,$(V)),,echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests (cmocka), then the integration scripts (mpirun on loopback, under timeout).
# (The build runs in a sub-make so that pkg-config flags are read after check-deps.)
test: check-deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh tests/run.sh

# configs/slurm_example.sh under a single-node Slurm the test starts itself (root,
# slurm-wlm + munge; about a minute). Skipped inside make test unless SLURM_TESTS=1.
.PHONY: test-slurm
test-slurm: check-deps
	@$(MAKE) --no-print-directory all
	@SLURM_TESTS=1 BUILD=$(BUILD) sh tests/integration/slurm_example.sh

unit: check-deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) WISP_SKIP_INTEGRATION=1 sh tests/run.sh

# The same tests under AddressSanitizer + UndefinedBehaviorSanitizer, in a separate tree.
asan:
	$(MAKE) BUILD=build/asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" test

# Fuzzing with clang's libFuzzer. The pattern, for any parser of untrusted bytes:
#   tests/fuzz/fuzz_<name>.c   defines LLVMFuzzerTestOneInput (helpers: tests/fuzz/fuzz_util.h);
#                              it is found by this wildcard, compiled with the library built
#                              for fuzzing (build/fuzz/libwisp.a: clang, ASan + UBSan,
#                              -fsanitize=fuzzer-no-link) and linked with -fsanitize=fuzzer;
#                              an optional "FUZZ_MAX_LEN: N" line sets its input size;
#   tests/fuzz/seeds_<name>.sh (optional) writes seed inputs into the directory $$1
#                              (generated, never committed in bulk; may use $$BUILD/bin/wisp).
# `make fuzz` runs each target FUZZ_SECONDS (default 20; FUZZ_TARGETS="st json" picks
# some) through tests/fuzz/run.sh: -timeout=10 -rss_limit_mb=2048; `make fuzz-long` is
# the 5-minute-per-target run. docs/TESTING.md has the details.
FUZZ_CC ?= clang-14
FUZZ_SECONDS ?= 20
FUZZ_SAN := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=all

fuzz: check-deps
	@$(MAKE) --no-print-directory -j2 $(BUILD)/bin/wisp
	@$(MAKE) --no-print-directory -j2 BUILD=build/fuzz CC=$(FUZZ_CC) OPT=-O1 SAN="$(FUZZ_SAN)" fuzz-bins
	@BUILD=$(BUILD) FUZZ_BUILD=build/fuzz FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TARGETS="$(FUZZ_TARGETS)" \
	  sh tests/fuzz/run.sh

fuzz-long:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=300

fuzz-bins: $(FUZZ_BINS)

$(BUILD)/bin/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(filter 1,$(V)),,echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

# The long randomized fault campaign (tests/fault/campaign.py; the short fixed-seed one
# runs in `make test` as tests/integration/fault_campaign.sh): FAULT_RUNS_CLASSIFY and
# FAULT_RUNS_TRAIN faults, seed FAULT_SEED; the table goes to the terminal and to
# ${BUILD}/fault-campaign.md (docs/TESTING.md, "Fault campaign"). Needs root for the
# tmpfs of disk_full (skipped otherwise).
FAULT_RUNS_CLASSIFY ?= 120
FAULT_RUNS_TRAIN ?= 60
FAULT_SEED ?= 1
.PHONY: fault-long
fault-long: all
	@. configs/local_mpi_env.sh && b=$(BUILD) && BUILD=$$b /usr/bin/python3 tests/fault/campaign.py \
	  --runs-classify $(FAULT_RUNS_CLASSIFY) --runs-train $(FAULT_RUNS_TRAIN) --seed $(FAULT_SEED) \
	  --markdown $$b/fault-campaign.md

# The PyTorch references of make bench need Debian's torch, scipy (WAV reading) and sox
# (FLAC decoding, as whisper's ffmpeg): installed as root when missing, else named.
BENCH_APT_PKGS := python3-torch python3-scipy python3-numpy sox
bench-deps:
	@if ! $(PYTHON) -c "import torch, scipy, numpy" 2>/dev/null || ! command -v sox >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "wisp: installing the benchmark references' packages with apt-get"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BENCH_APT_PKGS) || exit 1; \
	  else \
	    echo "wisp: the PyTorch references need, as root: apt-get install -y $(BENCH_APT_PKGS)"; \
	    echo "wisp: running wisp's benchmarks without them"; \
	  fi; \
	fi

bench: check-deps bench-deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) PYTHON=$(PYTHON) BENCH_ONLY="$(BENCH_ONLY)" sh bench/run.sh

demo: check-deps
	@$(MAKE) --no-print-directory -j2 $(LIB) $(BINS)
	@BUILD=$(BUILD) sh configs/demo.sh

format-check:
	@clang-format --dry-run --Werror $(wildcard common/*/*.[ch] jobs/*/*.[ch] coordinator/*.[ch] worker/*.[ch] tests/*.[ch] tests/fuzz/*.[ch] bench/*.[ch])

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
