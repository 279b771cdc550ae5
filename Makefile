# Two commands on a fresh machine: `make dev-up` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

STACK := scripts/stack.sh
ITEST_ENV := .local/itest/stack.env
DEV_ENV := .local/dev/stack.env
# Runs a command with a stack's settings exported.
with_env = set -a && . $(1) && set +a &&

.PHONY: help dev-up dev-down dev-status dev-migrate dev-rollback \
        itest-up itest-down itest-migrate itest-rollback \
        test chaos fuzz redrive replay fmt lint style sqlx-check sqlx-prepare unit check build deploy-check bench microbench

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

dev-up: ## install what is missing, start the stack and the three services, print URLs
	@scripts/dev.sh up

dev-down: ## stop the services and the dev stack (data is kept in .local/dev)
	@scripts/dev.sh down

dev-status: ## what is running
	@scripts/dev.sh status

dev-migrate: ## apply pending migrations to the dev database
	@$(STACK) dev up >/dev/null
	@$(call with_env,$(DEV_ENV)) cargo run --quiet -p cmd-processor -- migrate

dev-rollback: ## revert the newest migration of the dev database (STEPS=n for more)
	@$(STACK) dev up >/dev/null
	@$(call with_env,$(DEV_ENV)) cargo run --quiet -p cmd-processor -- rollback $(or $(STEPS),1)

redrive: ## send the dev stack's dead letters back to their topics (after fixing the cause)
	@$(STACK) dev up >/dev/null
	@$(call with_env,$(DEV_ENV)) cargo run --quiet -p cmd-processor -- redrive

replay: ## process a stored file again on the dev stack: FILE_ID=... [COMPANY=... if the ledger does not know it]
	@test -n "$(FILE_ID)" || { echo "usage: make replay FILE_ID=<file id> [COMPANY=<slug>]" >&2; exit 2; }
	@$(STACK) dev up >/dev/null
	@$(call with_env,$(DEV_ENV)) cargo run --quiet -p cmd-processor -- replay $(FILE_ID) $(COMPANY)

itest-up: ## start the integration-test stack (own ports, own data)
	@$(STACK) itest up

itest-down: ## stop the integration-test stack
	@$(STACK) itest down

itest-migrate: itest-up ## apply migrations to the itest database
	@$(call with_env,$(ITEST_ENV)) cargo run --quiet -p cmd-processor -- migrate

itest-rollback: itest-up ## revert the newest migration of the itest database (STEPS=n for more)
	@$(call with_env,$(ITEST_ENV)) cargo run --quiet -p cmd-processor -- rollback $(or $(STEPS),1)

fmt: ## format the code
	cargo fmt --all

lint: style sqlx-check ## formatting, clippy and the queries' offline data (.sqlx/), as CI checks them

style: ## formatting and clippy only (no stack needed)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings

sqlx-check: itest-up ## .sqlx/ matches every compile-checked query (described against a scratch itest database)
	@scripts/sqlx.sh check

sqlx-prepare: itest-up ## rewrite .sqlx/ after changing a query; commit it with the change
	@scripts/sqlx.sh prepare

chaos: itest-up ## only the process-level fault tests (also in `make test`), printing what they inject and count
	@$(call with_env,$(ITEST_ENV)) cargo test --workspace --no-run --quiet
	@$(call with_env,$(ITEST_ENV)) cargo test -p etl-e2e --test it -- crash:: rebalance:: shutdown:: --nocapture

fuzz: itest-up ## schemathesis against a live api, driven by api/openapi.yaml (also in `make test`; FUZZ_EXAMPLES=n)
	@cargo test --workspace --no-run --quiet
	@scripts/fuzz.sh

bench: itest-up ## release builds, then the pipeline's rates against the raw rates of S3, the broker and Postgres (docs/performance.md); run it alone: it first removes what test runs left on the stack
	@scripts/bench.sh install
	@cargo build --release --quiet -p cmd-api -p cmd-processor -p etl-bench
	@$(call with_env,$(ITEST_ENV)) ETL_STALE_AFTER_SECS=60 target/release/etl-bench
	@$(MAKE) --no-print-directory microbench

microbench: ## criterion micro-benchmarks of the hot paths: the api's body split, the processor's validation (also run by `make bench`)
	@cargo bench --quiet -p cmd-api --bench split -p cmd-processor --bench validate

deploy-check: ## offline validation of deployments/ (compose, kustomize + Kubernetes schemas) and the Dockerfiles (also in `make test`)
	@scripts/deploy-check.sh

build: ## build the three Docker images (needs a Docker engine; says so clearly without one)
	@scripts/images.sh

unit: ## unit and property tests (no stack needed)
	cargo test --workspace --lib --bins --quiet
	cargo test -p etl-core -p cmd-api --test it --quiet -- _properties::

check: style unit ## the quick loop while coding, no stack needed: formatting, clippy, unit and property tests

test: lint itest-up ## the whole suite against the real local stack (and headless Chromium), then the fuzz run
	@scripts/deploy-check.sh
	@scripts/browser.sh install
	@$(call with_env,$(ITEST_ENV)) cargo test --workspace
	@scripts/fuzz.sh
