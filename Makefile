# Quick start:   make demo   (SQLite: migrate, import the sample rate card, replay the samples, report,
#                             reconcile with the sample bill, true the chargeback up to it)
#                make test   (the whole suite; PostgreSQL tests run when 127.0.0.1:5432 answers)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DB     ?= sqlite:///metering.db
MONTH  ?= 2026-10

.PHONY: install demo test bench samples clean

$(BIN)/metering: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

install: $(BIN)/metering

demo: install
	$(BIN)/metering --db $(DB) db upgrade
	$(BIN)/metering --db $(DB) rates import samples/rates.csv
	$(BIN)/metering --db $(DB) deployments import samples/deployments.csv
	$(BIN)/metering --db $(DB) subscriptions import samples/subscriptions.csv
	$(BIN)/metering --db $(DB) replay samples/events
	$(BIN)/metering --db $(DB) report --month $(MONTH) --by business_unit,subscription --ptu-costs samples/ptu_costs.csv
	$(BIN)/metering --db $(DB) backends import samples/backends.csv
	$(BIN)/metering --db $(DB) bill import samples/bill-$(MONTH).focus.csv
	$(BIN)/metering --db $(DB) reconcile --month $(MONTH)
	$(BIN)/metering --db $(DB) true-up --month $(MONTH)

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/bench_stream.py
	$(BIN)/python bench/bench_pipeline.py

samples: install
	$(BIN)/python samples/generate.py

clean:
	rm -rf $(VENV) metering.db metering.db-wal metering.db-shm .pytest_cache .hypothesis
