# Two commands on a fresh machine with Python 3.11+ and make:
#   make run    create .venv, install the service (no dev tools), start local Postgres + Redis
#               (unless WALLET_*_URL are set) and the sandbox PSP (unless WALLET_PSPS is set),
#               apply migrations, create demo data, serve on 127.0.0.1:8080 and print how to
#               place a bet and make a deposit
#   make test   install the dev tools too; the whole test suite against real servers that the
#               test session starts

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
# Two install sets: `make run` needs the service and its embedded servers only; the tests, lint,
# benchmarks and load tests add the dev tools (some 300 MB more: schemathesis, playwright, ...).
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-dev

.PHONY: run test lint migrate clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	@touch $(RUN_STAMP)

# The dev set holds the runtime one: `make run` after it installs nothing more.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	@touch $(STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/wallet serve --demo

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

migrate: $(RUN_STAMP)
	$(BIN)/wallet migrate

# Benchmark (docs/performance.md): the service in production mode against WALLET_DATABASE_URL /
# WALLET_REDIS_URL (else the local servers of `make run`); one JSON line on stdout.
#   make bench [BENCH_ARGS="--duration 60 --players 10000"]
#   make bench-scale    1,000 players, then 1,000,000 players with 10,000,000 postings
#   make soak           10 minutes at the same load, worker RSS sampled every 30 s
.PHONY: bench bench-scale soak chaos

bench: $(STAMP)
	@$(BIN)/python -m loadtests.bench $(BENCH_ARGS)

bench-scale: $(STAMP)
	@$(BIN)/python -m loadtests.bench --scale $(BENCH_ARGS)

# Limits (docs/performance.md, "Limits"): bets of a player with 1,000,000 past rounds this month
# and six limits against a fresh player's, on a database of its own on WALLET_DATABASE_URL.
#   make bench-limits [LIMITS_BENCH_ARGS="--history 1000000 --bets 2000"]
.PHONY: bench-limits

bench-limits: $(STAMP)
	@$(BIN)/python -m loadtests.limits_bench $(LIMITS_BENCH_ARGS)

# Chaos (docs/loadtests.md): mixed load while Postgres and Redis fail, on servers of its own.
#   make chaos [CHAOS_ARGS="--duration 300 --players 200 --concurrency 32"]
chaos: $(STAMP)
	$(BIN)/python -m loadtests.chaos $(or $(CHAOS_ARGS),--duration 300)

soak: $(STAMP)
	@$(BIN)/python -m loadtests.bench --duration 600 --memory-every 30 --pgbench-seconds 0 \
		$(BENCH_ARGS)

# Load tests (docs/loadtests.md): seed once, then one command per profile; reports land in
# loadtests/reports/<profile>.html and <profile>_*.csv.
#   make load-seed PLAYERS=1000 [BALANCE=10000000] [API=https://wallet.example API_KEY=<admin key>]
#   make load PROFILE=bet-burst|hot-player|mixed|duplicate-storm USERS=64 SPAWN=16 DURATION=60s \
#        HOST=http://127.0.0.1:8080 [SHAPE=burst] [SEED=loadtests/seed.json] [LOCUST_ARGS=...]
PLAYERS ?= 1000
PROFILE ?= bet-burst
USERS ?= 64
SPAWN ?= 16
DURATION ?= 60s
SEED ?= $(or $(WALLET_LOAD_SEED),loadtests/seed.json)
# Some shells export HOST as the machine's name: only a URL counts.
ifeq ($(findstring ://,$(HOST)),)
HOST := $(or $(WALLET_LOAD_HOST),http://127.0.0.1:8080)
endif
LOAD_CLASS.bet-burst := BetBurst
LOAD_CLASS.hot-player := HotPlayer
LOAD_CLASS.mixed := Mixed
LOAD_CLASS.duplicate-storm := DuplicateStorm

.PHONY: load-seed load

load-seed: $(STAMP)
	$(BIN)/python -m loadtests.seed --players $(PLAYERS) --out $(SEED) \
		$(if $(BALANCE),--balance $(BALANCE)) $(if $(API),--api $(API) --api-key $(API_KEY))

load: $(STAMP)
	@test -n "$(LOAD_CLASS.$(PROFILE))" || \
		{ echo "PROFILE must be one of: bet-burst hot-player mixed duplicate-storm"; exit 2; }
	@mkdir -p loadtests/reports
	WALLET_LOAD_SEED=$(SEED) $(if $(SHAPE),WALLET_LOAD_SHAPE=$(SHAPE)) \
		$(BIN)/locust -f loadtests/locustfile.py $(LOAD_CLASS.$(PROFILE)) \
		--headless -u $(USERS) -r $(SPAWN) -t $(DURATION) --host $(HOST) \
		--csv loadtests/reports/$(PROFILE) --html loadtests/reports/$(PROFILE).html $(LOCUST_ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
