# The two commands a fresh machine needs: `make demo` and `make test`. Both create .venv when it is
# missing and (re)install only when pyproject.toml changed, so they are quick the second time.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pst-installed

.PHONY: setup demo test bench
setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pst demo

test: $(STAMP)
	@tests/ensure_chromium.sh
	$(PY) -m pytest $(PYTEST_ARGS)
