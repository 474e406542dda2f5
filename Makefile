# Two entry points for a fresh machine: `make demo` and `make test`. Everything else is theirs.
# `demo` needs no root: Python packages go into .venv, Kafka into the user's cache. Only the
# tests and benchmarks need the Debian tools (h2load/nghttpd, h2o, prometheus), installed with
# apt by `test-tools` (root, as on CI).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test-tools demo test lint bench proof image clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# What the demo needs: the virtualenv and Kafka 2.3.0 (no root, no apt install).
setup: $(STAMP)
	$(BIN)/mdmpush kafka install

# What only the tests and benchmarks need (root).
test-tools:
	bash scripts/setup-debian.sh

demo: setup
	$(BIN)/mdmpush demo

lint: $(STAMP)
	$(BIN)/ruff check services tests
	$(BIN)/mypy

test: setup test-tools lint
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=25

bench: setup test-tools
	$(BIN)/pip install -q -e '.[dev,bench]'
	bash scripts/bench-all.sh

# Issue 11's proof: the full fault suite (broker, services and APNs faults, with their lost /
# duplicate / recovery figures and plots), the fuzzers at their proof profile, every benchmark at
# full size (the fleet at 1,000,000 devices, a 30-minute soak with faults, bounded memory);
# exits non-zero when a bar is missed. Several hours on 2 cores.
proof: setup test-tools
	$(BIN)/pip install -q -e '.[dev,bench]'
	bash scripts/proof.sh

# The container image (needs a Docker engine; see README "Deploy on Kubernetes").
image:
	bash scripts/build-image.sh

clean:
	-$(BIN)/mdmpush kafka down
	rm -rf $(VENV) .state
