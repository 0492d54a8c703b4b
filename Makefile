# The two commands: `make` builds everything into build/, `make test` installs
# what is missing (Debian packages), builds and runs every test.
BUILD  ?= build
JOBS   ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all build guest deps test unit integration demo bench clean

all: build guest

build:
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

guest:
	@guest/build.sh $(BUILD)/guest >/dev/null

deps:
	@scripts/install-deps

# Unit tests first (fast), then the integration tests that boot real VMs.
test: deps all
	cd $(BUILD) && ctest --output-on-failure --timeout 600 $(CTEST_ARGS)

unit: build
	cd $(BUILD) && ctest --output-on-failure -LE integration

demo: all
	@scripts/demo

bench: build
	@bench/run-all

clean:
	rm -rf $(BUILD)
