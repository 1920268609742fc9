# The README's two commands, `make bench` and `make test`, each set up what
# they need from nothing: a virtualenv in .venv, PyTorch, the build.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1
PYTEST_ARGS ?=
# Test worker processes (pytest-xdist): one per core, at most 4 (each holds
# torch, Triton's interpreter and compiled graphs).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))

.PHONY: bench bench-quick test build cmake clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)" numpy scipy scikit-learn "transformers>=4.57,<6" pytest pytest-xdist ninja pybind11 matplotlib setuptools wheel "cmake>=3.26"
# The CPU tests run the Triton kernels in Triton's interpreter, which before
# Triton 3.8 turns a loop bound into an int through a one-element array:
# NumPy 2.4 refuses that (TORCH_SPEC=torch==2.11.0 brings Triton 3.6).
	$(PY) -c "import importlib.util as u, sys; u.find_spec('triton') or sys.exit(0); import triton; sys.exit(tuple(map(int, triton.__version__.split('.')[:2])) < (3, 8))" || $(PY) -m pip install -q "numpy<2.4"
	touch $@

# The extension, in place (csrc/ changes rebuild incrementally with ninja).
build: $(VENV)/.installed
	mkdir -p build
	set -o pipefail; MAX_JOBS=$${MAX_JOBS:-$$(nproc)} $(PY) setup.py build_ext --inplace 2>&1 | tee build/build.log | { grep -E "error|warning: .*fused|spill" || true; }
	FUSED_GUMBEL_PREBUILT=1 $(PY) -m pip install -q --no-build-isolation --no-deps -e .

test: build
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) tests $(PYTEST_ARGS)

bench: build
	$(PY) -m fused_gumbel.bench

bench-quick: build
	$(PY) -m fused_gumbel.bench --quick

# The same sources as a libtorch C++ library (build-cmake/libfused_gumbel.so).
cmake: $(VENV)/.installed
	$(PY) scripts/cmake_build.py build-cmake

clean:
	rm -rf build build-cmake fused_gumbel/_C*.so *.egg-info
