# The two commands for a fresh machine:
#   make demo   build what is needed, publish a sample image, run it with podman
#   make test   run the whole test suite (what CI runs through .ci/run)
#
# Every test target ends by printing one line "N passed, N failed[, N skipped]"
# (the shell suites share hack/lib-test.sh). `deps` installs only the Debian
# packages that are missing (hack/install-deps.sh, a no-op when all are there);
# test-rust and test-lint need no Debian package beyond the toolchain and do
# not depend on it, so they never run apt-get.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/.cargo/bin:$(PATH)
export GOFLAGS ?= -mod=mod
export GOTOOLCHAIN ?= local

.PHONY: all deps build lib header header-check test test-rust test-lint test-graphtest test-bats \
        bench bench-graphtest test-publish bench-publish patches patches-check storage clean demo \
        podman buildah test-e2e test-e2e-5 test-rootless idmap-helper idmap-fuse install-idmap-helper test-cvmfs test-hostile fuzz \
        test-real-cvmfs test-podman-system

all: build

deps:
	@hack/install-deps.sh

# The Rust library (rlib + cdylib + staticlib) and the pkg-config file for cgo.
lib build:
	@hack/build-lib.sh

header:
	@hack/header.sh generate

header-check:
	@hack/header.sh check

# Regenerate patches/: the storage series from go-bindings/, the image series
# from hack/image-patches/, one of each for every podman line (hack/versions.env).
patches:
	@hack/gen-patches.sh
	@hack/gen-image-patches.sh

patches-check:
	@hack/gen-patches.sh --check
	@hack/gen-image-patches.sh --check

storage: lib
	@hack/patched-storage.sh

# The pinned podman (hack/versions.env) built against the patched storage, Rust core linked in
# statically (skipped when its inputs are unchanged): line 6, the primary, is build/bin/podman;
# `make podman PODMAN_LINE=5` builds podman 5.8 as build/bin/podman-5.
podman: deps
	@hack/build-podman.sh

# buildah (hack/versions.env) on the same patched storage and image as podman 6: build/bin/buildah.
buildah: deps
	@hack/build-buildah.sh

# End to end against the primary line's podman (PODMAN_LINE=5 for the 5.8 line) ...
test-e2e: deps
	@hack/test-e2e.sh

# ... and the smoke cases (run by name, pull, build, commit, save) against podman 5.8.
test-e2e-5: deps
	@PODMAN_LINE=5 E2E_SET=smoke hack/test-e2e.sh

# The privileged helper of rootless use (docs/rootless.md): build/bin/cvmfs-idmap-view;
# install-idmap-helper (as root) installs it setuid root with cvmfs-rootless-setup into
# $(PREFIX)/bin and an empty /etc/containers/cvmfs-idmap-view.conf when there is none.
PREFIX ?= /usr/local
idmap-helper:
	@mkdir -p build/bin
	$(CC) -O2 -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 -fstack-protector-strong \
	  -o build/bin/cvmfs-idmap-view helper/cvmfs-idmap-view.c

# The ID-mappable pass-through for CVMFS client mounts (docs/rootless.md).
idmap-fuse:
	@mkdir -p build/bin
	cd helper/cvmfs-idmap-fuse && GOFLAGS=-mod=mod go build -o ../../build/bin/cvmfs-idmap-fuse .

install-idmap-helper: idmap-helper idmap-fuse
	install -o root -g root -m 4755 build/bin/cvmfs-idmap-view $(PREFIX)/bin/cvmfs-idmap-view
	install -o root -g root -m 755 build/bin/cvmfs-idmap-fuse $(PREFIX)/bin/cvmfs-idmap-fuse
	install -o root -g root -m 755 hack/cvmfs-rootless-setup $(PREFIX)/bin/cvmfs-rootless-setup
	@[ -e /etc/containers/cvmfs-idmap-view.conf ] || { install -d /etc/containers && \
	  printf '%s\n' '# Repositories users may ID-map (cvmfs-idmap-view): REPOSITORY [MOUNT TO CLONE] a line;' '# on a CVMFS client, MOUNT is where cvmfs-idmap-fuse serves it (docs/rootless.md).' \
	  '# List only repositories whose whole content every permitted user may read.' \
	  >/etc/containers/cvmfs-idmap-view.conf && chmod 644 /etc/containers/cvmfs-idmap-view.conf; }

# Rootless (issue 15): the primary line's podman as two throw-away users (docs/rootless.md).
test-rootless: deps
	@hack/test-rootless.sh

test: deps
	@hack/run-all-tests.sh

test-rust:
	@hack/test-rust.sh

# cargo fmt --check and cargo clippy --all-targets -D warnings.
test-lint:
	@hack/test-lint.sh

test-publish: deps
	@hack/test-publish.sh

test-cvmfs: deps
	@hack/test-cvmfs.sh

# The publisher against a real CernVM-FS stratum 0 (REAL_CVMFS_REPO, default test.local);
# not part of `make test`: it skips with one line when no cvmfs_server is installed.
test-real-cvmfs: deps
	@hack/test-real-cvmfs.sh

# podman's own system tests (test/system of the pinned podman) with overlay, cvmfs and a
# CVMFS-published test image; PODMAN_SYSTEM_SET=full for every offline-capable file,
# PODMAN_LINE=5 for podman 5.8. Not part of `make test` (tests/podman-system/README.md).
test-podman-system: deps
	@hack/test-podman-system.sh

# Hostile inputs (tar streams, records, registry answers, C ABI calls), one line each.
test-hostile: deps
	@hack/test-hostile.sh

bench-publish: deps
	@hack/bench-publish.sh

test-graphtest: deps lib
	@hack/test-graphtest.sh

test-bats: deps lib
	@hack/test-bats.sh

# cargo fuzz targets, FUZZ_SECONDS each (not in make test, which replays fuzz/regressions/).
fuzz: deps
	@hack/fuzz.sh

# Everything measured in one run -> one markdown document, also bench/results.md
# (BENCH_SCALE=0.1 for a quick run; bench/README.md).
bench: deps lib
	@hack/bench.sh

bench-graphtest: deps lib
	@hack/bench-graphtest.sh

# Build what is missing, publish a ~1 GiB sample image into ./demo-repo, run it with
# podman's cvmfs driver; prints time to first output and bytes read (DEMO_SIZE_MB).
demo: deps
	@hack/demo.sh

clean:
	rm -rf build target
