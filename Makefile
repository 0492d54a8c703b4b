# The two commands: `make` builds everything into build/, `make test` builds
# and runs the tests (all but LONG_TESTS, below: `make test-long`). Every target
# that builds first installs what is missing (Debian packages,
# scripts/install-deps: a no-op when all are present) or, when not root, stops
# at once naming the command that would.
BUILD  ?= build
JOBS   ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all build guest guest-disk deps test test-long test-disk test-libvirt unit integration demo bench install clean fuzz fuzz-seeds sanitize soak

all: build guest

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

guest:
	@guest/build.sh $(BUILD)/guest >/dev/null

# The disk-booted Debian guest, $(BUILD)/guest/debian.qcow2 (guest/disk/,
# docs/vms.md): minutes the first time (mmdebstrap from the apt mirror), then
# cached until its inputs change. Needs root. Not part of `all`.
guest-disk: deps
	@guest/disk/build-disk.sh $(BUILD)/guest

deps:
	@scripts/install-deps

# Unit tests first (fast, and in parallel: they share nothing), then one at
# a time the integration tests that boot real VMs (they measure rates and
# deadlines that a second TCG guest on these 2 cores would skew).
# The disk-guest tests (DiskVmTest.*, tests/integration/disk_vm_test.cc) need
# `make guest-disk`: they run in `make test-disk`, not here.
# LibvirtTest (tests/libvirt_test.sh) needs libvirt (scripts/install-deps-libvirt):
# `make test-libvirt`, not here.
# LONG_TESTS (~8 min) run in `make test-long`, not here, to keep CI near its
# 40 minutes: each is long by nature (a minute of running, a phase change at
# 75 s) or repeats, for another mode or side, a path a test here covers (the
# README's "Tests" says which).
LONG_TESTS := ^TrackingTest\.WssFindsTheHotSetAndFollowsAPhaseChange$$|^OffloadTest\.VmWithThreeQuartersOffloadedRunsAMinuteIntact$$|^RedisStoreTest\.MemverifyOffloadedToAThirdSurvivesMasterKillAndAgileMigration$$|^Modes/RoundTrip\.MemverifyThereAndBackIntact/(precopy|postcopy) |^Sides/RestartMigrationTest\..*/(source|destination) |^Modes/QemuBaseline\.
test: all
	cd $(BUILD) && ctest --output-on-failure --timeout 600 -L unit -j $(JOBS) $(CTEST_ARGS)
	cd $(BUILD) && ctest --output-on-failure --timeout 600 -LE unit -E '^DiskVmTest\.|^LibvirtTest$$|$(LONG_TESTS)' $(CTEST_ARGS)

test-long: all
	cd $(BUILD) && ctest --output-on-failure --timeout 600 -R '$(LONG_TESTS)' $(CTEST_ARGS)

test-disk: all guest-disk
	cd $(BUILD) && ctest --output-on-failure --timeout 900 -R '^DiskVmTest\.' $(CTEST_ARGS)

# A libvirt domain under agiled (docs/libvirt.md): installs libvirt first.
test-libvirt: all
	@scripts/install-deps-libvirt
	cd $(BUILD) && ctest --output-on-failure --timeout 300 -R '^LibvirtTest$$' $(CTEST_ARGS)

unit: build
	cd $(BUILD) && ctest --output-on-failure -LE integration

demo: all
	@scripts/demo

# The fault-injection soak (docs/reliability.md), short: SOAK_RUNS migrations of
# seed SOAK_SEED, each with a fault, in a lab of three agileds and a --data-dir
# agile-memd (network namespaces; needs root). CI runs it as it is (~5 min);
# long soaks are `lab/agile-lab soak --runs 300 ...` by hand. Fails on any
# corruption, lost VM or lost page.
SOAK_RUNS ?= 10
SOAK_SEED ?= 1
soak: all
	lab/agile-lab soak --runs $(SOAK_RUNS) --seed $(SOAK_SEED) --build $(abspath $(BUILD)) --out $(abspath $(BUILD))/soak

bench: build
	@bench/run-all

# Binaries, shim, guest image, man pages, systemd units and example configs
# under $(DESTDIR)$(PREFIX) (cmake/install.cmake has the layout).
install: all
	DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX)

# libFuzzer, one target per decoder (fuzz/, docs/security.md): built with clang
# in build-fuzz/, each run for FUZZ_SECONDS from fuzz/corpus/<target>/ (new
# inputs go to build-fuzz/corpus/, crashes to build-fuzz/artifacts/).
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz: deps
	@CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) $(CMAKE_FLAGS) -DAGILE_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_all
	@scripts/run-fuzz $(FUZZ_BUILD) $(FUZZ_SECONDS)

# Rewrites the generated seeds in fuzz/corpus/ after a wire format changes.
fuzz-seeds: deps
	@CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) $(CMAKE_FLAGS) -DAGILE_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_make_seeds
	@$(FUZZ_BUILD)/fuzz/fuzz_make_seeds fuzz/corpus

# The unit tests (ctest label "unit": their targets alone, not the daemons)
# under ASan+UBSan in build-asan/, then the concurrency test under TSan
# (guest_memory_tsan, from the normal build).
ASAN_BUILD ?= build-asan
UNIT_TARGETS = base_test wire_test store_test qemu_test vm_test track_test offload_unit_test \
               console_status_test service_test agilectl_exit_test loadgen_test
sanitize: deps
	@cmake -S . -B $(ASAN_BUILD) $(CMAKE_FLAGS) -DAGILE_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS) --target $(UNIT_TARGETS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:verify_asan_link_order=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -L unit -j $(JOBS) $(CTEST_ARGS)
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target guest_memory_tsan
	cd $(BUILD) && ctest --output-on-failure -R '^guest_memory_tsan$$'

clean:
	rm -rf $(BUILD) $(FUZZ_BUILD) $(ASAN_BUILD)
