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

repro: setup
	dvc repro
	dvc metrics show

# the tests' scratch folders go beside the checkout, not in a /tmp that other runs share
test: setup
	$(BIN)/python -m pytest --basetemp=$(CURDIR)/.pytest_tmp

clean:
	rm -rf outputs .dvc/cache .dvc/tmp
