# cni-multi build, test and install entry points. Every target does real work.
#
#   make build        static release binary -> $(CARGO_TARGET_DIR)/cni-multi
#   make deps         install the test tools that are missing (Debian packages; root)
#   make test         deps, fmt check, clippy (warnings are errors), all tests, then the second-kernel tests (root)
#   make test-host    the same without the qemu second kernel (quicker while developing)
#   make fuzz         every cargo-fuzz target for FUZZ_SECONDS each (fuzz/; nightly)
#   make conformance  reference plugins vs cni-multi, one PASS/FAIL line per scenario
#   make install      build, then `cni-multi install --dir $(DIR)` (DIR=/opt/cni/bin)
#   make demo         build, then `cni-multi demo`
#   make bench        build, then time the same work through the reference plugins and cni-multi
#   make bench-smoke  the same harness with 2 iterations and small scales: it must run, no timing asserted
#   make cluster-demo a simulated 3-node flannel cluster in throw-away netns; prints a report (root)
#   make e2e          build, then podman, containerd's CRI and distributions' configs on cni-multi's symlinks, and swaps to and from the reference (e2e/run.sh; root)
#   make image        build, then an OCI image FROM scratch holding only the binary (podman; deploy/)
#   make soak         20 workers, 10 000 ADD/DEL through bridge ipMasq -> portmap -> firewall -> tuning (root)
#   make vm-test      build, then boot a Debian kernel in qemu and run vm/tests/*.sh in it (vm/README.md)
#   make hot-functions trace plugin runs, rewrite link/hot-functions.txt (the link order of hot code; root)

CARGO ?= cargo
# `sudo make …` resets PATH to sudo's secure_path, which does not hold rustup's cargo: find it
# where rustup puts it, in root's home and then in that of the user who ran sudo (whose
# toolchains are then used through RUSTUP_HOME; the cargo cache stays root's own).
ifeq ($(shell command -v $(CARGO) 2>/dev/null),)
  SUDO_HOME := $(if $(SUDO_USER),$(shell getent passwd '$(SUDO_USER)' | cut -d: -f6))
  RUSTUP_BIN := $(firstword $(wildcard $(HOME)/.cargo/bin/cargo $(SUDO_HOME)/.cargo/bin/cargo))
  ifneq ($(RUSTUP_BIN),)
    export PATH := $(dir $(RUSTUP_BIN)):$(PATH)
    ifeq ($(RUSTUP_HOME)$(wildcard $(HOME)/.rustup),)
      export RUSTUP_HOME := $(SUDO_HOME)/.rustup
    endif
  endif
endif
TARGET ?= x86_64-unknown-linux-gnu
CARGO_TARGET_DIR ?= target
export CARGO_TARGET_DIR
DIR ?= /opt/cni/bin

RELEASE_BIN := $(CARGO_TARGET_DIR)/$(TARGET)/release/cni-multi
BIN := $(CARGO_TARGET_DIR)/cni-multi

IMAGE ?= localhost/cni-multi:latest

.PHONY: hot-functions image deps build test test-host conformance install demo bench cluster-demo vm-test e2e soak fuzz bench-smoke

# Static and not position-independent (relocation-model=static): the kernel maps it where it
# was linked, so no start-up relocation pass writes to (and copies) the pages holding
# pointers; the hot functions are linked first and together (build.rs, link/).
RELEASE_RUSTFLAGS ?= -C target-feature=+crt-static -C relocation-model=static
SYMBOL_ORDER ?= $(CURDIR)/link/hot-functions.txt

build:
	RUSTFLAGS='$(RELEASE_RUSTFLAGS)' CNI_MULTI_SYMBOL_ORDER='$(SYMBOL_ORDER)' \
	  $(CARGO) build --release --locked --target $(TARGET)
	@info=$$(file -L $(RELEASE_BIN)); echo "$$info"; \
	case "$$info" in \
	  *"dynamically linked"*) echo "error: $(RELEASE_BIN) is not static" >&2; exit 1 ;; \
	  *"static-pie linked"*|*"statically linked"*) ;; \
	  *) echo "error: cannot tell whether $(RELEASE_BIN) is static" >&2; exit 1 ;; \
	esac
	cp -f $(RELEASE_BIN) $(BIN).tmp && mv -f $(BIN).tmp $(BIN)
	@ls -l $(BIN)
	@size=$$(stat -c %s $(BIN)); [ $$size -le 3000000 ] || { echo "error: $(BIN) is $$size bytes, over the 3 MB budget" >&2; exit 1; }

# The functions plugin runs execute, listed in the order make build links them (build.rs):
# re-run after large code changes (stale names are ignored, new code just lands later).
hot-functions:
	RELEASE_RUSTFLAGS='$(RELEASE_RUSTFLAGS)' TARGET=$(TARGET) scripts/hot-functions/run.py

# Each part is timed, so CI's log shows where its minutes go.
test: deps
	@for t in test-host fuzz bench-smoke vm-test e2e; do \
	  s=$$(date +%s); $(MAKE) --no-print-directory $$t || exit 1; \
	  echo "== make $$t passed in $$(( $$(date +%s) - s )) s"; \
	done

# What the tests use, installed by Debian package name when missing (scripts/deps.sh).
deps:
	scripts/deps.sh

test-host: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) test --locked --no-fail-fast

# Coverage-guided fuzzing (fuzz/README.md). Each target runs FUZZ_SECONDS from its committed
# seeds (fuzz/seeds/<target>) plus what earlier runs found (fuzz/corpus/<target>, not
# committed); a crash, a timeout or a leak fails the run and leaves fuzz/artifacts/<target>/.
# CI runs the short default; for a long run: make fuzz FUZZ_SECONDS=600. Built optimised but
# with overflow checks and debug assertions (-a: an overflow is a panic, as it would be a bug),
# without a sanitizer (-s none: safe Rust; twice the executions).
FUZZ_SECONDS ?= 10
FUZZ_TARGETS ?= plugin_config cni_args result runtime_config subnet_env cache_file host_local \
	sysctl_name dhcp_packet dhcp_rpc netlink nft

fuzz: deps
	cd fuzz && $(CARGO) +nightly fuzz build -O -a -s none
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t seeds/$$t; \
	  $(CARGO) +nightly fuzz run -O -a -s none $$t corpus/$$t seeds/$$t -- \
	    -dict=dict/$$t.dict -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 2>fuzz-$$t.log \
	    || { tail -40 fuzz-$$t.log; echo "fuzz: $$t failed, input in fuzz/artifacts/$$t/" >&2; exit 1; }; \
	  echo "fuzz: $$t $$(grep -o 'stat::number_of_executed_units: *[0-9]*' fuzz-$$t.log | grep -o '[0-9]*$$') executions, no crash"; \
	done

conformance:
	$(CARGO) test --locked --test conformance -- --nocapture

install: build
	$(BIN) install --dir $(DIR)

demo: build
	$(BIN) demo

# The harness runs in the dev profile (it only spawns plugins); the plugins are the static
# release build. Results: the printed table and target/bench/results.json.
bench: build
	CNI_MULTI_BIN=$(BIN) $(CARGO) bench --locked --profile dev --bench cni

# CI: every case once through, so the harness never rots; the figures mean nothing. The
# harness exits non-zero when a case errors (BENCH_STRICT).
bench-smoke: build
	CNI_MULTI_BIN=$(BIN) BENCH_ITERS=2 BENCH_SCALE=0,20 BENCH_STRICT=1 BENCH_OUT=$(CARGO_TARGET_DIR)/bench/smoke.json \
	  $(CARGO) bench --locked --profile dev --bench cni

# The Kubernetes network model on three simulated nodes (tests/cluster.rs): pods added through
# flannel, traffic checks printed with the addresses each receiver saw.
cluster-demo:
	$(CARGO) test --quiet --locked --test cluster -- --nocapture

# The long fault run (tests/faults.rs `soak`): operations, failures and residue are printed.
SOAK_WORKERS ?= 20
SOAK_OPS ?= 10000
soak:
	SOAK_WORKERS=$(SOAK_WORKERS) SOAK_OPS=$(SOAK_OPS) $(CARGO) test --locked --test faults -- --ignored --nocapture soak

VM_DIR ?= $(CARGO_TARGET_DIR)/vm

vm-test: deps build
	VM_DIR=$(VM_DIR) vm/fetch.sh
	VM_DIR=$(VM_DIR) CARGO=$(CARGO) TARGET=$(TARGET) vm/build-rust-tests.sh
	VM_DIR=$(VM_DIR) VM_CNI_BIN=$(BIN) vm/build-initramfs.sh
	VM_DIR=$(VM_DIR) vm/run.sh

# Real runtimes and shipped configs (`make e2e E2E_PARTS="containerd configs"` for some parts):
# all state in temp dirs, a private mount namespace and throw-away node netns (e2e/run.sh).
# The runtimes themselves come from `make deps`.
e2e: deps build
	E2E_BIN=$(BIN) e2e/run.sh $(E2E_PARTS)

# The node-install image (deploy/Containerfile): the static binary alone, entrypoint
# `cni-multi install --copy --dir /host/opt/cni/bin`. Tested by e2e/image.sh.
image: build
	ctx=$$(mktemp -d) && cp $(BIN) "$$ctx/cni-multi" && cp deploy/Containerfile "$$ctx/" && \
	podman build -q -t $(IMAGE) "$$ctx"; rc=$$?; rm -rf "$$ctx"; exit $$rc
