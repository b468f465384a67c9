# cni-multi build, test and install entry points. Every target does real work.
#
#   make build        static musl release binary -> $(CARGO_TARGET_DIR)/cni-multi (ARCH=arm64, LIBC=gnu: below)
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
#   make image        build amd64 and arm64, then a multi-arch OCI image list, FROM scratch, the binary only (podman; deploy/)
#   make soak         20 workers, 10 000 ADD/DEL through bridge ipMasq -> portmap -> firewall -> tuning (root)
#   make vm-test      build, then boot a Debian kernel in qemu and run vm/tests/*.sh in it (vm/README.md);
#                     ARCH=arm64: the arm64 build under Debian's arm64 kernel in qemu-system-aarch64
#   make release VERSION=x.y.z  per architecture a .tgz to unpack into /opt/cni/bin, checksums, an SBOM
#   make release-test build the release twice (here and from a copy elsewhere), compare, unpack, run
#   make hot-functions trace plugin runs, rewrite link/hot-functions-<target>.txt (the link order of hot code; root)

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
CARGO_TARGET_DIR ?= target
export CARGO_TARGET_DIR
DIR ?= /opt/cni/bin

# What make build builds: ARCH amd64 (default) or arm64, LIBC musl (default) or gnu (amd64
# only: the glibc build the musl one replaced, kept for make bench's A/B, BENCH_REFERENCE_DIR).
# The default build is target/cni-multi; the others are named after what differs.
ARCH ?= amd64
LIBC ?= musl
TARGET_amd64_musl := x86_64-unknown-linux-musl
TARGET_arm64_musl := aarch64-unknown-linux-musl
TARGET_amd64_gnu := x86_64-unknown-linux-gnu
TARGET ?= $(TARGET_$(ARCH)_$(LIBC))
ifeq ($(TARGET),)
$(error no build for ARCH=$(ARCH) LIBC=$(LIBC): ARCH is amd64 or arm64, LIBC musl (or gnu on amd64))
endif
BIN_NAME := cni-multi$(if $(filter amd64_musl,$(ARCH)_$(LIBC)),,-$(ARCH)-$(LIBC))

RELEASE_BIN := $(CARGO_TARGET_DIR)/$(TARGET)/release/cni-multi
BIN := $(CARGO_TARGET_DIR)/$(BIN_NAME)

# The musl targets link with rust-lld itself (in the toolchain; rustc finds it): no C cross
# toolchain for arm64, and lld takes the symbol order (build.rs). The gnu target keeps cc.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER = rust-lld
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER = rust-lld

IMAGE ?= localhost/cni-multi:latest

.PHONY: vm-test-arm64 hot-functions image deps build test test-host conformance install demo bench cluster-demo vm-test e2e soak fuzz bench-smoke release release-test

# Static and not position-independent (relocation-model=static): the kernel maps it where it
# was linked, so no start-up relocation pass writes to (and copies) the pages holding
# pointers; the hot functions are linked first and together (build.rs, link/). The order
# file is per target: the symbol names carry a hash that differs between targets.
RELEASE_RUSTFLAGS ?= -C target-feature=+crt-static -C relocation-model=static
SYMBOL_ORDER ?= $(CURDIR)/link/hot-functions-$(TARGET).txt

# Reproducible: the same source and toolchain give the same bytes wherever the tree and
# cargo's registry are (paths remapped; passed 0x1f-separated so a path may hold spaces).
# The commit and version `cni-multi version` prints come from here (build.rs).
CARGO_HOME ?= $(HOME)/.cargo
SEP := $(shell printf '\037')
EMPTY :=
SPACE := $(EMPTY) $(EMPTY)
ENCODED_RUSTFLAGS = $(subst $(SPACE),$(SEP),$(strip $(RELEASE_RUSTFLAGS)))$(SEP)--remap-path-prefix=$(CURDIR)=/build/cni-multi$(SEP)--remap-path-prefix=$(CARGO_HOME)=/cargo
GIT_COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell [ -n "$$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo -dirty)
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n1)

# cargo-auditable (make deps) embeds the dependency list (.dep-v0) that `cargo audit bin`,
# Trivy and Syft read.
# Without it (make demo before make deps) the build goes on without the list, saying so;
# make release requires it (REQUIRE_AUDITABLE). The rustup target is added if missing, as
# make deps does, so make demo works on a fresh machine too.
build:
	@command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx '$(TARGET)' && \
	  { echo "rustup target add $(TARGET)"; rustup target add $(TARGET); } || true
	@order=; [ -f "$(SYMBOL_ORDER)" ] && order="$(SYMBOL_ORDER)"; \
	build="auditable build"; \
	if ! $(CARGO) auditable --version >/dev/null 2>&1; then \
	  [ -z "$(REQUIRE_AUDITABLE)" ] || { echo "error: cargo-auditable missing: run make deps" >&2; exit 1; }; \
	  echo "note: cargo-auditable missing (make deps installs it): no dependency list embedded"; build=build; \
	fi; \
	echo "cargo $$build --release --locked --target $(TARGET) (RUSTFLAGS: $(RELEASE_RUSTFLAGS), paths remapped; symbol order: $${order:-none})"; \
	CARGO_ENCODED_RUSTFLAGS='$(ENCODED_RUSTFLAGS)' CNI_MULTI_SYMBOL_ORDER="$$order" \
	  CNI_MULTI_GIT_COMMIT='$(GIT_COMMIT)' CNI_MULTI_VERSION='$(VERSION)' \
	  $(CARGO) $$build --release --locked --target $(TARGET)
	@info=$$(file -L "$(RELEASE_BIN)"); echo "$$info"; \
	case "$$info" in \
	  *"dynamically linked"*) echo "error: $(RELEASE_BIN) is not static" >&2; exit 1 ;; \
	  *"static-pie linked"*|*"statically linked"*) ;; \
	  *) echo "error: cannot tell whether $(RELEASE_BIN) is static" >&2; exit 1 ;; \
	esac
	cp -f "$(RELEASE_BIN)" "$(BIN).tmp" && mv -f "$(BIN).tmp" "$(BIN)"
	@ls -l "$(BIN)"
	@size=$$(stat -c %s "$(BIN)"); [ $$size -le 3000000 ] || { echo "error: $(BIN) is $$size bytes, over the 3 MB budget" >&2; exit 1; }

# The functions plugin runs execute, listed in the order make build links them (build.rs),
# built with make build's flags (only the link differs, so cargo relinks and no more):
# re-run after large code changes (stale names are ignored, new code just lands later).
# amd64 traces plugin runs (root); arm64, which cannot run here, takes amd64's list, each
# name matched hash aside (the symbol hashes differ between targets).
hot-functions:
ifeq ($(ARCH),amd64)
	CARGO_ENCODED_RUSTFLAGS='$(ENCODED_RUSTFLAGS)' TARGET=$(TARGET) scripts/hot-functions/run.py
else
	CARGO_ENCODED_RUSTFLAGS='$(ENCODED_RUSTFLAGS)' TARGET=$(TARGET) scripts/hot-functions/run.py --translate $(TARGET_amd64_musl)
endif

# Release archives (scripts/release.sh): per architecture cni-multi-linux-<arch>-<version>.tgz
# (binary + plugin symlinks), .sha256, .sha512 and a CycloneDX SBOM, in RELEASE_DIR; the same
# source and toolchain give the same bytes (SOURCE_DATE_EPOCH: the commit's time).
# `make release-test` builds them again from a copy of the tree elsewhere and compares.
RELEASE_ARCHES ?= amd64 arm64
RELEASE_DIR ?= $(CARGO_TARGET_DIR)/dist
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

release:
	@case "$(VERSION)" in [0-9]*.[0-9]*.[0-9]*) ;; *) echo "error: make release VERSION=x.y.z (got '$(VERSION)')" >&2; exit 1 ;; esac
	@for a in amd64 $(filter-out amd64,$(RELEASE_ARCHES)); do \
	  $(MAKE) --no-print-directory build ARCH=$$a VERSION=$(VERSION) REQUIRE_AUDITABLE=1 || exit 1; done
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) scripts/release.sh "$(RELEASE_DIR)" $(VERSION) "$(CARGO_TARGET_DIR)/cni-multi" \
	  $(foreach a,$(RELEASE_ARCHES),"$(a)=$(CARGO_TARGET_DIR)/cni-multi$(if $(filter amd64,$(a)),,-$(a)-musl):$(TARGET_$(a)_musl)")

release-test: deps
	VERSION=$(VERSION) scripts/release-test.sh

# Each part is timed, so CI's log shows where its minutes go.
test: deps
	@for t in test-host fuzz bench-smoke release-test vm-test vm-test-arm64 e2e; do \
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
	$(CARGO) test --locked --test it -- --nocapture conformance::

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

# The Kubernetes network model on three simulated nodes (tests/it/cluster.rs): pods added through
# flannel, traffic checks printed with the addresses each receiver saw.
cluster-demo:
	$(CARGO) test --quiet --locked --test it -- --nocapture cluster::

# The long fault run (tests/it/faults.rs `soak`): operations, failures and residue are printed.
SOAK_WORKERS ?= 20
SOAK_OPS ?= 10000
soak:
	SOAK_WORKERS=$(SOAK_WORKERS) SOAK_OPS=$(SOAK_OPS) $(CARGO) test --locked --test it -- --ignored --nocapture faults::soak

VM_DIR ?= $(CARGO_TARGET_DIR)/vm$(if $(filter amd64,$(ARCH)),,-$(ARCH))

# ARCH=arm64: the arm64 build under Debian's arm64 kernel in qemu-system-aarch64 (TCG), with
# Debian's arm64 busybox/iproute2/jq (vm/README.md). Emulated arm64 runs 2-3x slower than
# amd64 here, so by default a subset touching every plugin family and nftables runs there
# (VM_TESTS= runs every test, Rust files included).
ifeq ($(ARCH),arm64)
VM_TESTS ?= cni-loopback demo chain dummy vlan ipvlan vrf kernel-links
endif
vm-test: deps build
	@s=$$(date +%s); \
	VM_ARCH=$(ARCH) VM_DIR=$(VM_DIR) vm/fetch.sh && \
	VM_DIR=$(VM_DIR) CARGO=$(CARGO) TARGET=$(TARGET) VM_TESTS="$(VM_TESTS)" vm/build-rust-tests.sh && \
	VM_DIR=$(VM_DIR) VM_CNI_BIN=$(BIN) VM_TESTS="$(VM_TESTS)" vm/build-initramfs.sh && \
	VM_DIR=$(VM_DIR) vm/run.sh; rc=$$?; \
	echo "vm-test ($(ARCH)): $$(( $$(date +%s) - s )) s"; exit $$rc

vm-test-arm64:
	$(MAKE) --no-print-directory vm-test ARCH=arm64

# Real runtimes and shipped configs (`make e2e E2E_PARTS="containerd configs"` for some parts):
# all state in temp dirs, a private mount namespace and throw-away node netns (e2e/run.sh).
# The runtimes themselves come from `make deps`.
e2e: deps build
	$(MAKE) --no-print-directory build ARCH=arm64
	E2E_BIN=$(BIN) E2E_BIN_ARM64=$(CARGO_TARGET_DIR)/cni-multi-arm64-musl e2e/run.sh $(E2E_PARTS)

# The node-install image (deploy/Containerfile): per architecture the static binary alone,
# entrypoint `cni-multi install --copy --dir /host/opt/cni/bin`, under one multi-arch manifest
# list IMAGE (deploy/build-image.sh). Tested by e2e/image.sh.
IMAGE_ARCHES ?= amd64 arm64
image:
	@for a in $(IMAGE_ARCHES); do $(MAKE) --no-print-directory build ARCH=$$a || exit 1; done
	deploy/build-image.sh $(IMAGE) $(foreach a,$(IMAGE_ARCHES),"$(a)=$(CARGO_TARGET_DIR)/cni-multi$(if $(filter amd64,$(a)),,-$(a)-musl)")
