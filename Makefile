# qmri task runner. `make demo` and `make test` are the two commands of the README; CI runs
# `.ci/run`, which calls `make lint test`, so none of these targets can rot.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install install-test demo report test test-fast lint bench bench-dce-memory bench-scale sample clean

# A virtual environment with qmri installed in editable mode. uv installs the stack in seconds
# (pip takes ~10x longer); it is itself installed from PyPI into the venv.
$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade uv

$(VENV)/.installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[test]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## demo: install qmri and run the workflow on data_sample/ (outputs in results/qmri/)
demo: install
	$(BIN)/snakemake --cores $(CORES)
	@echo
	@echo "Per-patient tables:"
	@ls -1 results/qmri/sub-*/sub-*_roistats.csv results/qmri/sub-*/sub-*_response.csv
	@echo "Cohort tables: results/qmri/cohort/roistats.csv results/qmri/cohort/response.csv"

## report: the Snakemake report of the sample run (results/qmri/report.html), after make demo
report: install
	$(BIN)/snakemake --report results/qmri/report.html
	@echo "Report: results/qmri/report.html"

## test: install the test dependencies and run the whole test suite
test: install-test
	$(BIN)/pytest

## test-fast: the quick loop (skips end-to-end workflow runs and full-size phantoms)
test-fast: install-test
	$(BIN)/pytest -m "not slow"

## lint: ruff (lint and format) and snakemake --lint
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint

## bench: fit synthetic volumes with every model; ratios against a per-voxel curve_fit loop
## (and dipy for IVIM and DTI) measured in the same run, with peak memory
bench: install-test
	$(BIN)/python benchmarks/bench_models.py
	$(BIN)/python benchmarks/bench_diffusion.py
	$(BIN)/python benchmarks/bench_dce.py

## bench-dce-memory: extended Tofts on a 256 x 256 x 32 x 80 volume (about a minute, < 2 GB)
bench-dce-memory: install-test
	$(BIN)/python benchmarks/bench_dce.py --full-volume

## bench-scale: the workflow on phantom cohorts of 1, 4 and 16 subjects (two timepoints) with
## --cores 2: jobs and wall time per subject, and the 16/4 slope (target <= 1.2); ~30 minutes
bench-scale: install-test
	$(BIN)/python benchmarks/bench_scale.py --cores $(CORES)

## sample: regenerate data_sample/ from the phantom (deterministic, seed 0)
sample: install
	rm -rf data_sample
	$(BIN)/qmri phantom data_sample --subjects 2 --sessions pre,fu1,fu2 --seed 0

clean:
	rm -rf results .snakemake .pytest_cache
