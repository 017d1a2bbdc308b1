# The README's commands. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Stage commands (`python -m pipeline.*`) and `mlflow models serve` need the venv first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# The model `make serve` serves: params.yaml's registered model at @champion (MODEL=... for another).
MODEL  ?= $(shell python -m aivsreal.tracking default-model)
PORT   ?= 5001

.DEFAULT_GOAL := help
FACEBENCH ?= ../shared/facebench
# Real faces: the preset (params/facebench.yaml: trained for re-saved, resized images; checked first).
# PRESET=params/facebench-lossless.yaml: the noise-residual recipe, for images that are never re-encoded.
PRESET ?= params/facebench.yaml
# SET="data.faces=crop train.epochs=12": more overrides on top of the preset (KEY=VALUE, as dvc exp run -S takes).
SET ?=
# Tests: pytest-xdist, one worker per core (at most 4: each may run a pipeline); each test file runs whole on one
# worker, so its module fixtures are set up once (loadgroup does not group under pytest 9.2). PARALLEL= runs serially.
PARALLEL ?= -n logical --maxprocesses 4 --dist loadfile

.PHONY: help setup pipeline test test-all lint serve serve-guarded ui app facebench

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/\$$(PORT)/$(PORT)/g' | \
	  awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

setup: $(BIN)/.installed  ## create .venv and install pinned requirements (once)

pipeline: setup  ## set up, then run the whole DVC pipeline on data.dir (sample data by default)
	dvc repro
	python -m pipeline.summary

facebench: setup  ## the pipeline on real faces (FACEBENCH=folder of sources with ai/ and real/, PRESET=...) as a DVC experiment; SET="KEY=VALUE ..." adds overrides
	base="$$(mktemp)" && git show HEAD:params.yaml > "$$base" && \
	flags="$$(python -m aivsreal.params $(PRESET) --base "$$base" $(foreach s,$(SET),--set $(s)))" && rm -f "$$base" && \
	eval dvc exp run $$flags -S data.dir=$(FACEBENCH)
	python -m pipeline.summary

test: setup  ## set up, then run the test suite (unit + integration, no slow tests)
	pytest -m "not slow" -rs $(PARALLEL)

test-all: setup  ## every test, including those marked slow
	pytest $(PARALLEL)

lint: setup  ## ruff lint and format check
	ruff check . && ruff format --check .

serve: setup  ## serve the champion model on http://127.0.0.1:$(PORT) (MODEL=... to choose)
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} \
	  mlflow models serve -m "$(MODEL)" --env-manager local -h 127.0.0.1 -p $(PORT)

serve-guarded: setup  ## the same model and API through MLflow's app behind a request guard (python -m aivsreal.serving.server)
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} \
	  python -m aivsreal.serving.server -m "$(MODEL)" -H 127.0.0.1 -p $(PORT)

ui: setup  ## MLflow UI on http://127.0.0.1:5000 for the local tracking store (prints the training-runs link)
	@echo "training runs: $$(python -m aivsreal.tracking ui-url --port 5000)"
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db -h 127.0.0.1 -p 5000

app: setup  ## Streamlit web app on http://127.0.0.1:8501
	streamlit run webapp/app.py --server.address 127.0.0.1
