# DianaChat Workbench: set-up and the everyday jobs.
# `make demo` and `make test` each do the whole set-up on a fresh machine first.

PYTHON      ?= python3.11
VENV        ?= .venv
BIN         := $(VENV)/bin
PY          := $(BIN)/python
PIP         := $(PY) -m pip
UV          := $(BIN)/uv
UV_PIN      := uv==0.13.9
LLAMA_PIN   := 0.3.36
# -march=native enables AMX on these CPUs and segfaults at the first token: build with safe flags.
LLAMA_FLAGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
# pip's wheel cache ignores CMAKE_ARGS, so we keep our own wheelhouse keyed by version and flags.
WHEELHOUSE  ?= $(HOME)/.cache/dianachat-workbench/wheels/llama-cpp-python-$(LLAMA_PIN)-safecpu
STAMP       := $(VENV)/.installed

.PHONY: setup lock demo test test-fast bench bench-save bench-stacks lab lint clean-venv espeak chromium

setup: $(STAMP)

# Installs exactly uv.lock: the lock is exported (with hashes) and synced into .venv, then llama-cpp-python
# comes from our own safe-flags wheelhouse and the project itself is installed editable, without resolving.
$(STAMP): pyproject.toml uv.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(UV_PIN)
	@if ! ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_PIN)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_PIN) once into $(WHEELHOUSE) (about 5 minutes)"; \
	  CMAKE_ARGS="$(LLAMA_FLAGS)" $(PIP) wheel -q --no-deps --no-cache-dir -w $(WHEELHOUSE) llama-cpp-python==$(LLAMA_PIN); \
	fi
	$(UV) export -q --frozen --extra dev --extra lab --no-emit-project --no-emit-package llama-cpp-python \
	  -o $(VENV)/requirements.lock.txt
	@echo "llama-cpp-python==$(LLAMA_PIN)" >> $(VENV)/requirements.lock.txt
	$(UV) pip sync -q --python $(PY) --find-links $(WHEELHOUSE) $(VENV)/requirements.lock.txt
	$(UV) pip install -q --python $(PY) --no-deps -e .
	@$(MAKE) --no-print-directory espeak
	@$(MAKE) --no-print-directory chromium
	@touch $(STAMP)

# Re-resolve on purpose (new versions, a changed dependency) and commit uv.lock; setup never re-resolves.
lock:
	@command -v $(UV) >/dev/null 2>&1 || $(PIP) install -q $(UV_PIN)
	$(UV) lock --python $(PYTHON) --upgrade

# espeak-ng is the second TTS voice; it comes from Debian, not PyPI.
espeak:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  echo "installing espeak-ng (second TTS voice) with apt"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) \
	  || echo "WARNING: could not install espeak-ng; the espeak voice will be unavailable (apt-get install espeak-ng)"; }

# Headless Chromium renders HTML reports to PNG in the report browser test; it comes from Debian.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (headless report rendering) with apt"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "WARNING: could not install chromium; the report browser test will be skipped (apt-get install chromium)"; }

# the main job: every strategy on part of the demo dataset, text and real-time voice, on the embedded models
# (doctor checks the demo's own config: it assembles and sha256-checks the Qwen 0.5B it runs on); then the booking
# agent's tools over SQLite on three booking conversations (cancel, reschedule, availability and a refusal), with
# tool-call accuracy per strategy (the whole booking suite: workbench eval evals/booking.yaml)
demo: setup
	$(BIN)/workbench doctor --config evals/configs/demo-models.yaml
	$(BIN)/workbench run evals/demo.yaml --report
	$(BIN)/workbench run evals/booking.yaml --conversations b005,b004,b001 --report

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q --durations=15

test-fast: setup
	$(BIN)/pytest -q -m "not integration"

# `make bench` compares every benchmark with the newest saved baseline in benchmarks/baseline/ and fails
# when the median of a harness or strategy benchmark (scripted endpoints, retrieval) is more than BENCH_FAIL
# slower. Benchmarks bound to the machine's spare CPU (model loads, LLM and MiniLM inference, single-round load
# tests) varied 0.4x-12x between two runs on a shared 2-core machine: they are compared and reported, not
# failed (BENCH_NOISY, a pytest -k expression). Every run is also autosaved under .benchmarks/ (git-ignored).
# `make bench-save` records a new baseline there (on a quiet machine; then commit the JSON).
BENCH_BASELINE_DIR := benchmarks/baseline
BENCH_BASELINE = $(lastword $(sort $(wildcard $(BENCH_BASELINE_DIR)/*/*.json)))
BENCH_FAIL ?= median:25%
BENCH_NOISY ?= test_models or real_model or embedded_model or query_embedding or new_question or throughput_at_concurrency
BENCH_ARGS := benchmarks -q --benchmark-only --benchmark-columns=median,iqr,min,max,rounds

bench: setup
	@test -n "$(BENCH_BASELINE)" || { echo "no baseline in $(BENCH_BASELINE_DIR)/: record one with make bench-save"; exit 2; }
	$(BIN)/pytest $(BENCH_ARGS) -k "not ($(BENCH_NOISY))" --benchmark-autosave \
	  --benchmark-compare=$(BENCH_BASELINE) --benchmark-compare-fail=$(BENCH_FAIL)
	$(BIN)/pytest $(BENCH_ARGS) -k "$(BENCH_NOISY)" --benchmark-autosave --benchmark-compare=$(BENCH_BASELINE)

bench-save: setup
	$(BIN)/pytest $(BENCH_ARGS) --benchmark-storage=file://$(BENCH_BASELINE_DIR) --benchmark-save=baseline

# Another commit's stack against this one, side by side (BENCHMARKS.md, "Old stack against new"): the other
# commit is checked out under $(OLD_DIR) and gets its own venv, installed the way that commit's Makefile does.
OLD ?= fcae3f8
OLD_DIR ?= $(HOME)/.cache/dianachat-workbench/stack-$(OLD)

bench-stacks: setup
	@test -d $(OLD_DIR) || git worktree add --detach $(OLD_DIR) $(OLD)
	@test -x $(OLD_DIR)/.venv/bin/python || $(MAKE) -C $(OLD_DIR) setup
	@mkdir -p .benchmarks
	OLD_PYTHON=$(OLD_DIR)/.venv/bin/python $(BIN)/pytest benchmarks/test_bench_stacks.py -q -s --benchmark-only \
	  --benchmark-columns=median,rounds --benchmark-json=.benchmarks/stacks-$(OLD).json

lab: setup
	$(BIN)/jupyter lab notebooks/

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean-venv:
	rm -rf $(VENV)
