# cni-multi build, test and install entry points. Every target does real work.
#
#   make build        static release binary -> $(CARGO_TARGET_DIR)/cni-multi
#   make test         fmt check, clippy (warnings are errors), all tests, then the second-kernel tests (root)
#   make test-host    the same without the qemu second kernel (quicker while developing)
#   make conformance  reference plugins vs cni-multi, one PASS/FAIL line per scenario
#   make install      build, then `cni-multi install --dir $(DIR)` (DIR=/opt/cni/bin)
#   make demo         build, then `cni-multi demo`
#   make bench        build, then time the same work through the reference plugins and cni-multi
#   make cluster-demo a simulated 3-node flannel cluster in throw-away netns; prints a report (root)
#   make e2e          build, then podman (CNI backend) with only cni-multi's symlinks (e2e/run.sh; root)
#   make vm-test      build, then boot a Debian kernel in qemu and run vm/tests/*.sh in it (vm/README.md)

CARGO ?= cargo
TARGET ?= x86_64-unknown-linux-gnu
CARGO_TARGET_DIR ?= target
export CARGO_TARGET_DIR
DIR ?= /opt/cni/bin

RELEASE_BIN := $(CARGO_TARGET_DIR)/$(TARGET)/release/cni-multi
BIN := $(CARGO_TARGET_DIR)/cni-multi

.PHONY: build test test-host conformance install demo bench cluster-demo vm-test e2e

build:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --locked --target $(TARGET)
	@info=$$(file -L $(RELEASE_BIN)); echo "$$info"; \
	case "$$info" in \
	  *"dynamically linked"*) echo "error: $(RELEASE_BIN) is not static" >&2; exit 1 ;; \
	  *"static-pie linked"*|*"statically linked"*) ;; \
	  *) echo "error: cannot tell whether $(RELEASE_BIN) is static" >&2; exit 1 ;; \
	esac
	cp -f $(RELEASE_BIN) $(BIN).tmp && mv -f $(BIN).tmp $(BIN)
	@ls -l $(BIN)

test: test-host vm-test e2e

test-host:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) test --locked --no-fail-fast

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

# The Kubernetes network model on three simulated nodes (tests/cluster.rs): pods added through
# flannel, traffic checks printed with the addresses each receiver saw.
cluster-demo:
	$(CARGO) test --quiet --locked --test cluster -- --nocapture

VM_DIR ?= $(CARGO_TARGET_DIR)/vm

vm-test: build
	VM_DIR=$(VM_DIR) vm/fetch.sh
	VM_DIR=$(VM_DIR) VM_CNI_BIN=$(BIN) vm/build-initramfs.sh
	VM_DIR=$(VM_DIR) vm/run.sh

# Real runtimes: installs podman & co. by package name when missing; all state in temp dirs,
# a private mount namespace and a throw-away node netns (e2e/run.sh).
E2E_PACKAGES := podman runc catatonit busybox-static uidmap containerd
e2e: build
	@missing=; for p in $(E2E_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get install -y -qq --no-install-recommends $$missing; fi
	E2E_BIN=$(BIN) e2e/run.sh
