# The two commands: `make` builds everything into build/, `make test` builds
# and runs every test. Every target that builds first installs what is missing
# (Debian packages, scripts/install-deps: a no-op when all are present) or, when
# not root, stops at once naming the command that would.
BUILD  ?= build
JOBS   ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all build guest deps test unit integration demo bench install clean

all: build guest

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

guest:
	@guest/build.sh $(BUILD)/guest >/dev/null

deps:
	@scripts/install-deps

# Unit tests first (fast), then the integration tests that boot real VMs.
test: all
	cd $(BUILD) && ctest --output-on-failure --timeout 600 $(CTEST_ARGS)

unit: build
	cd $(BUILD) && ctest --output-on-failure -LE integration

demo: all
	@scripts/demo

bench: build
	@bench/run-all

# Binaries, shim, guest image, man pages, systemd units and example configs
# under $(DESTDIR)$(PREFIX) (cmake/install.cmake has the layout).
install: all
	DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD)
