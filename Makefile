# DianaChat Workbench: set-up and the everyday jobs.
# `make demo` and `make test` each do the whole set-up on a fresh machine first.

PYTHON      ?= python3.11
VENV        ?= .venv
BIN         := $(VENV)/bin
PY          := $(BIN)/python
PIP         := $(PY) -m pip
TORCH_PIN   := torch==2.13.0
LLAMA_PIN   := 0.3.36
# -march=native enables AMX on these CPUs and segfaults at the first token: build with safe flags.
LLAMA_FLAGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
# pip's wheel cache ignores CMAKE_ARGS, so we keep our own wheelhouse keyed by version and flags.
WHEELHOUSE  ?= $(HOME)/.cache/dianachat-workbench/wheels/llama-cpp-python-$(LLAMA_PIN)-safecpu
STAMP       := $(VENV)/.installed

.PHONY: setup demo test test-fast bench lab lint clean-venv espeak chromium

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	# torch first: a plain dependency resolution would pull GBs of CUDA wheels
	$(PIP) install -q $(TORCH_PIN)
	@if ! ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_PIN)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_PIN) once into $(WHEELHOUSE) (about 5 minutes)"; \
	  CMAKE_ARGS="$(LLAMA_FLAGS)" $(PIP) wheel -q --no-deps --no-cache-dir -w $(WHEELHOUSE) llama-cpp-python==$(LLAMA_PIN); \
	fi
	$(PIP) install -q --find-links $(WHEELHOUSE) -e '.[dev,lab]'
	@$(MAKE) --no-print-directory espeak
	@$(MAKE) --no-print-directory chromium
	@touch $(STAMP)

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
demo: setup
	$(BIN)/workbench doctor
	$(BIN)/workbench run evals/demo.yaml --report

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not integration"

bench: setup
	$(BIN)/pytest benchmarks -q --benchmark-only --benchmark-autosave --benchmark-columns=median,iqr,min,max,rounds

lab: setup
	$(BIN)/jupyter lab notebooks/

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean-venv:
	rm -rf $(VENV)
