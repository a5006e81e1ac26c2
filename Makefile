# Recmesh — thin façade over scripts; CI calls the same targets. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
RECMESH := $(VENV)/bin/recmesh
export PATH := $(CURDIR)/.cache/bin:$(PATH)

.PHONY: help setup lint format test test-unit test-integration test-e2e up down logs status demo \
        bench bench-bus bench-ingest bench-quality bench-train bench-serve bench-freshness clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

setup: ## virtualenv + project (editable, all extras), Kafka jars, redis-server, helm, actionlint, ML-100K (idempotent)
	@infra/setup.sh

lint: setup ## ruff (lint + format check) and mypy (strict on recmesh.core)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services/core

format: setup ## apply ruff format and autofixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup ## the whole suite: unit, integration (real Kafka + Redis started by fixtures), deploy checks, e2e
	$(PY) -m pytest tests -q -p no:cacheprovider

test-unit: setup ## unit tests only (no I/O)
	$(PY) -m pytest tests/unit -q

test-integration: setup ## integration tests (real broker and Redis)
	$(PY) -m pytest tests/integration -q

test-e2e: setup ## end-to-end test of the whole stack as processes
	$(PY) -m pytest tests/e2e -q

up: setup ## start Kafka, Redis, topics and the five services (data under .local/)
	@$(PY) -m recmesh.stack up

down: ## stop everything `make up` started (safe when nothing runs)
	@if [ -x $(PY) ]; then $(PY) -m recmesh.stack down; else infra/kafka/kafka.sh stop; infra/redis/redis.sh stop; fi

logs: ## tail the logs of the local stack
	@tail -n 30 .local/logs/*.log .local/kafka/kafka.log .local/redis/redis.log 2>/dev/null || echo "no logs yet"

status: ## show each service: up/down, port, model version, consumer lag
	@$(RECMESH) status

demo: setup ## the main job: stack up, MovieLens-100K in, train, promote, recommend, watch a click change results
	@$(RECMESH) demo

bench: bench-bus bench-ingest bench-quality bench-train bench-serve bench-freshness ## every benchmark (JSON in bench/results/)

bench-bus: setup ## codec and producer/consumer throughput vs JSON and raw confluent-kafka
	$(PY) bench/bus.py

bench-ingest: setup ## HTTP ingestion events/s vs the raw producer
	$(PY) bench/ingest.py

bench-quality: setup ## NDCG@10/Recall@10 of every model on MovieLens-100K
	$(PY) bench/quality.py

bench-train: setup ## full training pipeline vs raw implicit ALS on 1M synthetic interactions
	$(PY) bench/train.py

bench-serve: setup ## open-loop latency of recommend calls vs a hello-world endpoint
	$(PY) bench/serve.py

bench-freshness: setup ## click → changed recommendation latency under background load
	$(PY) bench/freshness.py

clean: down ## remove local state (.local) but keep caches (.cache, .venv)
	rm -rf .local
