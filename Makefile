# Ferrium: conventional entry points. See README.md.
#
#   make run    build and start a single node (etc/examples/single-node.toml)
#   make test   run the whole test suite (with the short robustness suite)
#   make soak   the robustness suite for FERRIUM_SOAK_SECS (default 1800) seconds
#
# Both first check the build prerequisites (a C++ compiler and libclang for
# RocksDB's bindings) and install them with apt-get when run as root.

CARGO ?= cargo
CONFIG ?= etc/examples/single-node.toml

.PHONY: all build run test soak prereqs fmt lint ci clean

all: build

prereqs:
	@contrib/check-prereqs.sh

build: prereqs
	$(CARGO) build --bins

run: prereqs
	$(CARGO) run --bin ferrium-server -- --config $(CONFIG)

test: prereqs
	$(CARGO) test --all-targets
	$(CARGO) test --doc

FERRIUM_SOAK_SECS ?= 1800

soak: prereqs
	FERRIUM_SOAK_SECS=$(FERRIUM_SOAK_SECS) $(CARGO) test --test robustness nemesis_schedules -- --nocapture

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

ci:
	.ci/run

clean:
	$(CARGO) clean
