# Thin wrapper over CMake presets. `make run` and `make test` work on a fresh machine.
PRESET ?= release
ifeq ($(CI),true)
PRESET := ci
endif
BUILD_DIR := build/$(PRESET)
JOBS ?= $(shell nproc)
MODEL ?= tests/fixtures/default-model
PROMPT ?= It is a truth universally acknowledged
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: all bootstrap configure build run test bench debug-test format clean

all: build

bootstrap:
	@scripts/bootstrap.sh

configure: bootstrap
	@cmake --preset $(PRESET) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Generates a sample with the bundled model, then serves it (OpenAI API + chat page) until Ctrl-C.
run: build
	@$(BUILD_DIR)/fireflyer generate --model $(MODEL) --prompt "$(PROMPT)" -n 64
	@echo
	@echo "To use a real checkpoint: $(BUILD_DIR)/fireflyer generate --model /path/to/DeepSeek-V3-HF-dir --chat --prompt 'Hello'"
	@echo
	@$(BUILD_DIR)/fireflyer serve --model $(MODEL) --host $(HOST) --port $(PORT)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: build
	@for b in $(BUILD_DIR)/bench_*; do $$b; done

debug-test:
	@$(MAKE) test PRESET=debug

format:
	@git ls-files '*.h' '*.cc' | xargs clang-format -i

clean:
	@rm -rf build
