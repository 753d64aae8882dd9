# Two commands: `make repro` (set up, then run the pipeline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# the summary stage's output (dvc.yaml): the run in at most 15 lines, printed last; every
# figure is in `dvc metrics show`, the training curves in `dvc plots show`
SUMMARY := outputs/summary.txt

repro: setup
	dvc repro
	@echo
	@cat $(SUMMARY)

# the tests' scratch folders go beside the checkout, not in a /tmp that other runs share
test: setup
	$(BIN)/python -m pytest --basetemp=$(CURDIR)/.pytest_tmp

clean:
	rm -rf outputs .dvc/cache .dvc/tmp
