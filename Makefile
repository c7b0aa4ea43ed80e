# Two entry points (see README): `make demo` (set up + train the digits demo + sample) and
# `make test` (set up + run the tests). Both are idempotent: the virtual environment is built
# once and rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/digits_edm
# the demo recipe: EDM on the digits (configs/digits.py is the DDPM-eps one; same network and steps)
DEMO_CONFIG ?= configs/digits_edm.py
# Extra pip options for `make setup`. The dev extra pins torch (the diffusers parity tests' reference):
# pip takes a local CPU wheel when PIP_FIND_LINKS names one; elsewhere
# PIP_OPTS=--extra-index-url=https://download.pytorch.org/whl/cpu gets the CPU build, not the CUDA one.
PIP_OPTS ?=

.PHONY: setup demo toy2d test test-slow test-all lint format docs bench clean

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_OPTS) -e ".[dev]"
	$(PY) -m pip install -q --no-deps "k-diffusion==0.1.1.post1"  # tests/test_kdiffusion.py (its sampling module)
	touch $@

setup: $(VENV)/.stamp

demo: setup
	$(PY) train.py --config=$(DEMO_CONFIG) --workdir=$(WORKDIR)
	$(PY) sample.py --workdir=$(WORKDIR) --num_samples=1000 --output=$(WORKDIR)/generated
	$(PY) -m jaxdiff.evaluation --samples=$(WORKDIR)/generated --dataset=digits --out=$(WORKDIR)/generated/report.json

toy2d: setup
	$(PY) train.py --config=configs/toy2d.py --workdir=runs/toy2d
	$(PY) sample.py --workdir=runs/toy2d --num_samples=2000 --output=runs/toy2d/generated --trajectory
	$(PY) -m jaxdiff.evaluation --samples=runs/toy2d/generated --dataset=toy2d/s_curve

test: setup
	$(PY) -m pytest -n 2 -q tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# the documentation site (mkdocs.yml: guides, notebooks executed in their tiny mode, the API
# reference) into build/docs/site with `mkdocs build --strict`, offline; first the check that every
# `jaxdiff.` name the docstrings, docs/ and README.md mention exists (jaxdiff/tools/docs.py)
docs: setup
	$(PY) -m jaxdiff.tools.docs --out build/docs/api --site build/docs/site

# the slow tier (training runs, the README's walkthroughs, 2-process FSDP, ...): README "Tests"
test-slow: setup
	$(PY) -m pytest -q -m slow --durations=15 tests

# everything CI checks plus the slow tier: the scheduled job (`.ci/run --all`)
test-all: lint docs test test-slow

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache build/docs
