# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -e .
	touch $(STAMP)

venv: $(STAMP)

DEMO_ARGS ?=

demo: venv  ## run sample workflows through a worker pool, then serve the admin
	$(PY) manage.py demo $(DEMO_ARGS)

test: venv  ## the whole suite on real Postgres (embedded unless DATABASE_URL is set)
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy hotmesh_django
	DJANGO_SETTINGS_MODULE=tests.settings $(PY) manage.py makemigrations --check --dry-run

bench: venv  ## side-by-side benchmark; see bench/README.md
	$(PY) manage.py migrate --noinput
	$(PY) manage.py hotmesh_bench

clean:
	rm -rf $(VENV) .venv312 .venv313 *.egg-info .pytest_cache .mypy_cache .ruff_cache
