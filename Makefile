# Two set-up commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint screenshots bench clean sysdeps

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/opstower demo

# The standard `age` and `zstd` CLIs (Debian) prove by-hand recovery works without this tool.
sysdeps:
	@command -v age >/dev/null && command -v zstd >/dev/null || \
	  { apt-get update -q && apt-get install -y -q age zstd; }

# Two test processes: most of the suite waits on servers (archiving, recovery), not on the CPU.
# Each worker starts its own servers; --dist loadfile keeps a module (and its fixtures) on one.
TEST_WORKERS ?= 2

test: $(STAMP) sysdeps
	$(BIN)/ruff check src tests bench tools
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/lint-imports

screenshots: $(STAMP)
	$(BIN)/python tools/screenshots.py screenshots

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .demo bench/.work
