# trkx_ray: the two commands of the quick start.
#   make run   - set up .venv and run the main job on an embedded local Ray
#   make test  - set up .venv and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.trkx_ray-installed
RUN_ARGS ?=

.PHONY: all run test lint bench study evaluate clean venv

all: test

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU PyTorch when no CUDA driver is present (the local CPU wheel is found by pip);
	# with a GPU, the default PyPI torch (CUDA build) is installed by the package requirement.
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==2.13.0"; \
	fi
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m trkx_ray.run $(RUN_ARGS)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check trkx_ray tests scripts
	$(PY) -m mypy  # files and settings: [tool.mypy] in pyproject.toml (trkx_ray/)

bench: $(STAMP)
	$(PY) -m trkx_ray.bench --events 3 --pileup 200 --device cpu

study: $(STAMP)
	$(PY) -m trkx_ray.study --cpu-actors 1,2 --gpus 0 --events 16 --pileup 200 --out runs/scaling

evaluate: $(STAMP)
	$(PY) -m trkx_ray.evaluate --pileup 200 --seed 424242 --events 3 --json runs/evaluate.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
