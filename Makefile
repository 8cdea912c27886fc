# Butter — developer entry points. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
QBENCH_SRC ?= ../shared/bench/qbench
BENCH_OUT ?= bench-out

.PHONY: help build release test test-netns lint fmt bench up down status ci

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## debug build of every crate
	$(CARGO) build --workspace --locked

release: ## optimised butter-node binary
	$(CARGO) build --release --locked -p butter-node

test: ## unit, property, loopback multi-process and doc tests
	$(CARGO) nextest run --workspace --locked --no-fail-fast
	$(CARGO) test --workspace --locked --doc

test-netns: ## netns lab acceptance tests (root; builds butter-node first)
	$(CARGO) build --locked -p butter-node
	BUTTER_NETNS_REQUIRE=1 $(CARGO) nextest run --workspace --locked --profile netns --no-fail-fast

lint: ## rustfmt, clippy -D warnings, rustdoc -D warnings, shellcheck
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps --locked
	shellcheck netns/*.sh .ci/run

fmt: ## format everything
	$(CARGO) fmt --all

bench: ## transport benchmark beside raw quinn (qbench), as a table
	@mkdir -p $(BENCH_OUT)
	rm -rf /tmp/butter-qbench && cp -r $(QBENCH_SRC) /tmp/butter-qbench
	cd /tmp/butter-qbench && CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) build --release -q
	./target/release/qbench | tee $(BENCH_OUT)/qbench.txt
	./target/release/qbench idle | tee -a $(BENCH_OUT)/qbench.txt
	$(CARGO) bench --locked -p butter --bench transport -- --qbench $(BENCH_OUT)/qbench.txt | tee $(BENCH_OUT)/transport.md

up: release ## bring up the multi-subnet network (netns lab: 3 subnets × 4 nodes; root)
	netns/lab.sh up --subnets 3 --hosts 4 --bootstrap one-per-subnet --bin target/release/butter-node
	netns/lab.sh status

status: ## table of every node in the running network
	netns/lab.sh status

down: ## stop the network and remove everything it created
	netns/lab.sh down

ci: lint test test-netns ## what CI runs

.PHONY: k8s-check k8s-dashboards
k8s-check: ## render every k8s/ overlay (kubectl kustomize) and validate it strictly
	k8s/check.sh

k8s-dashboards: ## copy dashboards/*.json into the k8s monitoring overlay
	k8s/dashboards.sh
