# afxdp-proxy: `make demo` and `make test` work on a fresh Debian 12 machine as root.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD := build
CLANG ?= clang
ARCH_INC := /usr/include/$(shell uname -m)-linux-gnu
# setup.py's compile_bpf uses the same flags for the BPF objects a wheel carries: keep them alike
BPF_CFLAGS := -target bpf -g -O2 -Wall -Werror -Ibpf/include -Ibpf/lab -I$(ARCH_INC)
# bpf/: the proxy's programs; bpf/lab/: the testbed's, the packet generator and the cost floors
BPF_SRCS := $(wildcard bpf/*.bpf.c bpf/lab/*.bpf.c)
BPF_OBJS := $(addprefix $(BUILD)/,$(notdir $(BPF_SRCS:.bpf.c=.bpf.o)))
BPF_HDRS := $(wildcard bpf/include/*.h bpf/lab/*.h)
vpath %.bpf.c bpf bpf/lab
NATIVE_SRCS := $(wildcard native/*.c native/*.h native/*.py)
STAMP_DEPS := $(BUILD)/.deps
STAMP_VENV := $(VENV)/.installed
NATIVE_STAMP := $(BUILD)/.native

.PHONY: all deps bpf native dist demo test fuzz bench bench-quick bench-native lint clean
all: bpf native

deps: $(STAMP_DEPS) $(STAMP_VENV)

# apt packages: installed only when one is missing, so a warm machine stays fast
$(STAMP_DEPS): scripts/install-deps.sh
	bash scripts/install-deps.sh
	@mkdir -p $(BUILD) && touch $@

$(STAMP_VENV): pyproject.toml | $(STAMP_DEPS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

bpf: $(BPF_OBJS)
$(BUILD)/%.bpf.o: %.bpf.c $(BPF_HDRS) | $(STAMP_DEPS)
	@mkdir -p $(BUILD)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

native: $(NATIVE_STAMP)
$(NATIVE_STAMP): $(NATIVE_SRCS) $(BPF_HDRS) | $(STAMP_VENV)
	$(PY) native/build_native.py
	@touch $@

# an sdist and a wheel under dist/: the wheel carries the BPF objects and the extension
dist: $(STAMP_VENV)
	$(PY) -m build --outdir dist .

demo: all
	$(PY) -m afxdp_proxy demo

test: all
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=15 tests

# differential fuzzing: generated frames through BPF (every configuration), the AF_XDP engine's C and
# the Python reference (tests/differential.py); failing frames go to FUZZ_OUT, FUZZ_REPLAY runs them again
FUZZ_FRAMES ?= 100000
FUZZ_SEED ?= 1
FUZZ_OUT ?= $(BUILD)/fuzz-failures.txt
fuzz: all
	cd tests && $(abspath $(PY)) differential.py --frames $(FUZZ_FRAMES) --seed $(FUZZ_SEED) --out $(abspath $(FUZZ_OUT)) \
		$(if $(FUZZ_REPLAY),--replay $(abspath $(FUZZ_REPLAY)))

bench: all
	$(PY) -m afxdp_proxy bench

bench-quick: all
	$(PY) -m afxdp_proxy bench --quick --out results/quick

# the AF_XDP backend's per-packet C path (RX, TX) next to memcpy: pytest-benchmark, no sockets
bench-native: all
	$(PY) -m pytest afxdp_proxy/lab/bench/native.py -q -s -p no:cacheprovider

clean:
	rm -rf $(BUILD) dist afxdp_proxy/bpf_objects afxdp_proxy/_native*.so afxdp_proxy/_native.c
