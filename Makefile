# Two entry points for a fresh machine: `make demo` and `make test`. Everything else is theirs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint unit bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)
	bash scripts/setup-debian.sh
	$(BIN)/mdmpush kafka install

demo: setup
	$(BIN)/mdmpush demo

lint: $(STAMP)
	$(BIN)/ruff check services tests
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest -q -p no:cacheprovider --durations=15

clean:
	-$(BIN)/mdmpush kafka down
	rm -rf $(VENV) .state
