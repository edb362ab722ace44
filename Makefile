# Ferrium: conventional entry points. See README.md.
#
#   make run    build and start a single node (etc/examples/single-node.toml)
#   make test   run the whole test suite (with the short robustness suite)
#   make soak   the robustness suite for FERRIUM_SOAK_SECS (default 1800) seconds
#   make deb    build dist/ferrium_VERSION_ARCH.deb (dpkg-deb, contrib/debian/)
#               from release binaries (PROFILE=debug: the dev build)
#   make rpm    build dist/ferrium-VERSION-1.ARCH.rpm (rpmbuild, contrib/rpm/)
#   make package-test   build both, install the .deb here, check it, purge it
#                       (root only), and check the .rpm's file list
#
# Both first check the build prerequisites (a C++ compiler and libclang for
# RocksDB's bindings) and install them with apt-get when run as root.

CARGO ?= cargo
# The etcd-client test dependency compiles etcd's .proto files in its build
# script, which reads PROTOC: the vendored protoc (contrib/protoc-path.sh).
export PROTOC ?= $(shell contrib/protoc-path.sh)
CONFIG ?= etc/examples/single-node.toml

# Packages ship release binaries (cargo build --release: the release
# profile's own RocksDB compile, about 25 minutes on two cores the first
# time; `make test` never needs it). `make deb PROFILE=debug` packages the
# dev-profile build instead, for a quick local try.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
PROFILE ?= release
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DIST ?= dist

.PHONY: all build run test soak prereqs fmt lint ci clean deb rpm package-bins package-test

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

package-bins: prereqs
ifeq ($(PROFILE),debug)
	$(CARGO) build --bins
else
	$(CARGO) build --release --bins
endif
	@test -x $(TARGET_DIR)/$(PROFILE)/ferrium-server || { echo "no $(PROFILE) build in $(TARGET_DIR)"; exit 1; }

deb: package-bins
	contrib/debian/build-deb.sh $(TARGET_DIR)/$(PROFILE) $(DIST)

rpm: package-bins
	contrib/rpm/build-rpm.sh $(TARGET_DIR)/$(PROFILE) $(DIST)

package-test: deb rpm
	FERRIUM_PACKAGE_PROFILE=$(PROFILE) contrib/test-packages.sh $(DIST)/ferrium_$(VERSION)_$$(dpkg --print-architecture).deb \
		$(DIST)/ferrium-$(VERSION)-1.$$(rpm --eval '%{_arch}').rpm

ci:
	.ci/run

clean:
	$(CARGO) clean
