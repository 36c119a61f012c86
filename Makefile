# Two entry points: `make run` (set up + run the pipeline) and `make test` (set up + run tests).
# Both create .venv when missing. torch is installed first and on its own, pinned, so pip never
# swaps in a newer (CUDA, multi-GB) build to satisfy a looser range elsewhere.

VENV   ?= .venv
PYTHON ?= python3
TORCH  := torch==2.13.0
BIN    := $(abspath $(VENV))/bin

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
# Absolute, so `dvc exp run --temp` (a temp copy of the repo) logs to this repo's store.
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: install run test lint bench benchmark clean clean-benchmark servers-up servers-down retrain serve

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -c "import tomllib, torch; \
	pin = [d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'] if d.startswith('torch==')][0]; \
	want = pin.split('==')[1]; got = torch.__version__.split('+')[0]; \
	assert got == want, f'torch {got} installed but {want} pinned: remove $(VENV) and re-run make'; \
	assert pin == '$(TORCH)', 'Makefile TORCH and pyproject.toml torch pin differ'"
	$(BIN)/python -m pip check
	touch $@

run: install
	test -d .dvc || dvc init --quiet
	$(BIN)/python -m flows.pipeline   # dvc repro, in one Prefect flow: its stages share one server

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/recurrence.py

# The multi-seed, multi-label-budget comparison (benchmarks/dvc.yaml; ~75 min on 2 cores, 3 seeds): writes
# reports/benchmark.{md,csv}, plots/label_efficiency.png and reports/benchmark.json.
benchmark: install
	test -d .dvc || dvc init --quiet
	dvc repro benchmarks/dvc.yaml

servers-up: install
	infra/local/servers.sh start

servers-down:
	infra/local/servers.sh stop

# Rerun the pipeline and promote better task models (ARGS='-S finetune.eurosat.lr=0.005').
retrain: install
	$(BIN)/python -m flows.retrain $(ARGS)

# Weekly retraining deployment, served from this process; needs `make servers-up` first.
serve: install
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$${PREFECT_PORT:-4200}/api} \
	$(BIN)/python -m flows.retrain serve --cron "$${CRON:-0 3 * * 1}"

# Outputs of `make run` (dvc.yaml). The benchmark's (benchmarks/dvc.yaml: ~75 minutes of
# compute) survive it; `make clean-benchmark` removes those.
BENCHMARK_OUTS = data/benchmark reports/benchmark.md reports/benchmark.csv \
	reports/benchmark.json plots/label_efficiency.png
clean:
	rm -rf data/raw data/prepared data/recurrence data/models data/cache metrics mlflow.db mlartifacts
	find plots reports -mindepth 1 -maxdepth 1 $(foreach f,$(BENCHMARK_OUTS),! -path $(f)) \
		-exec rm -rf {} + 2>/dev/null || true

clean-benchmark:
	rm -rf $(BENCHMARK_OUTS)
