# Thin wrapper over CMake + ctest. `make test` runs every test three ways:
# the normal build, the same build forced onto the portable scalar kernels,
# and an AddressSanitizer + UndefinedBehaviorSanitizer build.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_GEN := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")

.PHONY: all setup test test-fast test-asan bench demo install clean format

all: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release

setup:
	bash scripts/setup.sh

test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(BUILD) && ATTN_ARCH=scalar ctest --output-on-failure -j $(JOBS)
	$(MAKE) test-asan

test-fast: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan:
	cmake -S . -B $(ASAN_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DATTN_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 ATTN_TEST_QUICK=1 ctest --output-on-failure -j $(JOBS)

bench: all
	$(BUILD)/attn bench

install: all
	cmake --install $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
