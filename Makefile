# One command each: `make test` (the test suite), `make run` (the main job).
# `make test-slow` runs the tests marked `slow` (larger-scale repeats; CI runs them too).
# Both install what they need first, into the current Python environment:
# PyTorch's CPU build, pinned, because an unpinned `torch` from the package index
# is a multi-GB CUDA build; then this package with its test and cluster extras
# (cluster: Dask distributed, for the tests of `reproduce --cluster` on a real local cluster).

PYTHON ?= python3
# One stamp per interpreter (its sys.prefix), so a venv never reuses another's.
STAMP := .make/installed-$(shell $(PYTHON) -c 'import hashlib, sys; print(hashlib.sha1(sys.prefix.encode()).hexdigest()[:12])' 2>/dev/null)
TORCH_CPU := torch==2.13.0

.PHONY: install test test-slow run bench lint serve-env test-serve

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install --quiet "$(TORCH_CPU)"
	$(PYTHON) -m pip install --quiet -e ".[test,cluster]"
	@mkdir -p .make && touch $@

# Two pytest-xdist workers (JOBS=4 on a bigger machine; JOBS=0 runs in this process). `loadgroup`
# keeps the tests that share a module-scoped fixture on one worker (tests/conftest.py groups them),
# so a trained model or a job run is built once, not once per worker. The 15 slowest tests are listed.
JOBS ?= 2
XDIST := $(if $(filter-out 0,$(JOBS)),-n $(JOBS) --dist loadgroup)
PYTEST_RUN := $(PYTHON) -m pytest $(XDIST) --durations=15

test: install
	$(PYTEST_RUN) -m "not slow and not serve" $(PYTEST_ARGS)

test-slow: install
	$(PYTEST_RUN) -m "slow and not serve" $(PYTEST_ARGS)

run: install
	$(PYTHON) -m pipeline.export $(ARGS)

bench: install
	$(PYTHON) benchmarks/bench_acl_layer.py
	$(PYTHON) benchmarks/bench_onnx_latency.py

lint: install
	$(PYTHON) -m ruff check .

# Serving tests (marker `serve`: a real Triton server, tritonclient) in their
# own environment, because nvidia-pytriton pins numpy<2. `make test` stays the main suite.
SERVE_VENV ?= .venv-serve
SERVE_PY := $(SERVE_VENV)/bin/python

serve-env: $(SERVE_VENV)/.installed

$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_PY) -m pip install --quiet "$(TORCH_CPU)"
	$(SERVE_PY) -m pip install --quiet -e ".[test,serve]"
	@touch $@

test-serve: serve-env
	$(SERVE_PY) -m pytest --durations=15 -m serve tests/deploy tests/export tests/pipeline/test_serving_stage.py $(PYTEST_ARGS)
