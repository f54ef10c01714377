# Entry points for people and CI. First `make demo`, then `make test`.
# Extra arguments: make test PYTEST_ARGS='-k glob -x'; make bench ARGS='--keys 100000'.

VENV        ?= .venv
PY          := $(VENV)/bin/python
CLI         := $(VENV)/bin/clusterinval
PYTEST_ARGS ?=
ARGS        ?=
# When set (CI does), pytest's own exit status is written there: make itself only says 2.
PYTEST_EXIT_FILE ?=

.PHONY: setup demo test lint bench loadtest

setup:
	@bash scripts/setup.sh

demo: setup
	$(CLI) demo $(ARGS)

test: setup
	@rc=0; $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ -n "$(PYTEST_EXIT_FILE)" ]; then echo $$rc > "$(PYTEST_EXIT_FILE)"; fi; \
	exit $$rc

lint: setup
	$(VENV)/bin/ruff check clusterinval tests
	$(VENV)/bin/mypy --strict clusterinval

bench: setup
	$(CLI) bench $(ARGS)

loadtest: setup
	$(CLI) loadtest $(ARGS)
