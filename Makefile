# The two commands: `make run` (the main job) and `make test` (the whole suite).
# Both create .venv on first use with a Python >= 3.12 found by tools/find_python.sh.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN ?= lowformer/fashion_mnist_quick
PYTEST_ARGS ?=

.PHONY: run test lint format setup data clean tpu-aot test-kernels-jax-min
.DEFAULT_GOAL := run

setup: $(STAMP) data

# recbole is installed for its data only (MovieLens-100K, DESIGN.md "Data"): --no-deps, because
# its declared dependencies (torch, ...) are never imported; the pin is in constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || "$$(bash tools/find_python.sh)" -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test,notebooks]"
	$(PY) -m pip install -q --no-deps -c constraints.txt recbole
	@touch $(STAMP)

data:
	@bash tools/install_data.sh

run: setup
	$(PY) -m experiments.run $(RUN)

# libtpu, for compiling the Pallas kernels for a TPU without one (pallas_kernels/aot.py): kept in
# its own folder, off the venv's path, so that nothing else tries to start a TPU runtime.
LIBTPU := $(VENV)/libtpu
$(LIBTPU)/.installed: $(STAMP)
	$(PY) -m pip install -q --no-deps --target $(LIBTPU) \
	  "$$($(PY) -c 'from pallas_kernels.aot import libtpu_requirement; print(libtpu_requirement())')"
	@touch $@

tpu-aot: $(LIBTPU)/.installed
	PYTHONPATH=$(LIBTPU) $(PY) -m pallas_kernels.aot $(AOT_ARGS)

# The kernel tests under the oldest jax that pyproject.toml allows, the GPU image's: its Pallas-Triton
# lowering differs from newer ones (jax 0.11 left partial blocks unmasked:
# pallas_kernels/rational/README.md). Its own venv; CI runs it after `make test` (.ci/run).
JAX_MIN := 0.11.2
VENV_MIN := .venv-jax-min
$(VENV_MIN)/.installed: pyproject.toml
	@test -x $(VENV_MIN)/bin/python || "$$(bash tools/find_python.sh)" -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install -q "jax==$(JAX_MIN)" "jaxlib==$(JAX_MIN)" numpy \
	  jaxtyping beartype einops pytest pytest-xdist
	@touch $@

test-kernels-jax-min: $(VENV_MIN)/.installed
	$(VENV_MIN)/bin/python -m pytest -n 2 -p no:cacheprovider tests/pallas_kernels \
	  --ignore=tests/pallas_kernels/test_aot.py $(PYTEST_ARGS)

test: setup $(LIBTPU)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache
