# Butter — developer entry points. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
QBENCH_SRC ?= ../shared/bench/qbench
BENCH_OUT ?= bench-out
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)

.PHONY: help build release test test-netns lint fmt bench bench-discovery bench-relay bench-sim up down status ci
.PHONY: static image image-source test-compose bench-kit monitor lab-up lab-status lab-down render

# The compose testbed (compose/, driven by butter-kit in kit/cli). The image is FROM scratch
# around a statically linked butter-node, so nothing is pulled from a registry.
STATIC_TARGET ?= x86_64-unknown-linux-gnu
STATIC_DIR ?= target/static
STATIC_BIN := $(STATIC_DIR)/$(STATIC_TARGET)/release/butter-node
STATIC_RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static --cfg getrandom_backend="linux_getrandom"
IMAGE ?= butter-node:local
SCALE ?= 4
MONITORING ?=
# The compose tier runs as its own project on its own subnets, so it neither disturbs nor is
# disturbed by a network `make up` (or a chaos run) left on the same engine.
TEST_PROJECT ?= butter-test
TEST_SUBNET_PREFIX ?= 10.211
# Its scale test (3 × 20 + 3 containers) runs as project $(TEST_PROJECT)-scale on these.
SCALE_TEST_SUBNET_PREFIX ?= 10.215
KIT := BUTTER_IMAGE=$(IMAGE) $(CARGO) run -q --locked -p butter-kit --

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## debug build of every crate
	$(CARGO) build --workspace --locked

release: ## optimised butter-node binary
	$(CARGO) build --release --locked -p butter-node

test: ## unit, property, loopback multi-process and doc tests
	$(CARGO) nextest run --workspace --locked --no-fail-fast
	$(CARGO) test --workspace --locked --doc

# The lab runs the binary the image ships (static, release): 70+ debug nodes on 2 cores spend
# their time in unoptimised TLS and cannot show how the shipped node behaves at that size.
test-netns: static ## netns lab acceptance tests (root; builds the static butter-node first)
	BUTTER_NETNS_REQUIRE=1 BUTTER_NODE_BIN=$(abspath $(STATIC_BIN)) \
		$(CARGO) nextest run --workspace --locked --profile netns --no-fail-fast

lint: ## rustfmt, clippy -D warnings, rustdoc -D warnings, shellcheck
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps --locked
	shellcheck netns/*.sh .ci/run node/butter/benches/*.sh

fmt: ## format everything
	$(CARGO) fmt --all

bench: ## transport benchmark beside raw quinn (qbench): 3 interleaved pairs, medians and ranges
	@mkdir -p $(BENCH_OUT)
	rm -rf /tmp/butter-qbench && cp -r $(QBENCH_SRC) /tmp/butter-qbench
	cd /tmp/butter-qbench && CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) build --release -q
	$(CARGO) bench --locked -p butter --bench transport -- --pairs 3 --qbench-bin $(CURDIR)/target/release/qbench | tee $(BENCH_OUT)/transport.md

bench-discovery: ## LAN convergence, cross-subnet reach, failure detection in the netns lab (T6-T8; root)
	@mkdir -p $(BENCH_OUT)
	$(CARGO) build --release --locked -p butter-node -p butter-netns-tests
	./target/release/bench-discovery | tee $(BENCH_OUT)/discovery.txt

bench-relay: ## hole-punch success and time by NAT type, relayed vs direct latency in the netns lab (root)
	@mkdir -p $(BENCH_OUT)
	$(CARGO) build --release --locked -p butter-node -p butter-netns-tests
	./target/release/bench-relay | tee $(BENCH_OUT)/relay.txt

bench-sim: ## the simulator rigs: churn (T10), retrieval (T11), maintenance (T13), scale (T14)
	@mkdir -p $(BENCH_OUT)
	$(CARGO) build --release --locked -p butter-sim
	for rig in churn retrieval maintenance scale; do ./target/release/butter-sim --quiet $$rig | tee $(BENCH_OUT)/sim-$$rig.txt; done

static: ## statically linked butter-node (glibc, crt-static) in target/static
	RUSTFLAGS='$(STATIC_RUSTFLAGS)' CARGO_TARGET_DIR=$(STATIC_DIR) $(CARGO) build --release --locked --target $(STATIC_TARGET) -p butter-node

image: static ## the butter-node:local image, FROM scratch (no registry needed)
	rm -rf $(STATIC_DIR)/image && mkdir -p $(STATIC_DIR)/image/data
	strip --strip-all -o $(STATIC_DIR)/image/butter-node $(STATIC_BIN)
	docker build --quiet -f compose/Dockerfile -t $(IMAGE) $(STATIC_DIR)/image

# From source inside Docker, for a machine with registry access and no Rust toolchain: pulls the
# rust image (compose/Dockerfile.source). Not used by CI; `make image` stays the default.
image-source: ## the butter-node:local image built from source in Docker (pulls rust:1.95-bookworm; needs a registry)
	docker build -f compose/Dockerfile.source -t $(IMAGE) .

up: image ## bring up the multi-subnet network: docker compose, 3 LANs × SCALE nodes + gateways (TOPOLOGY=topologies/x.toml: that one; MONITORING=1: Prometheus + Grafana; WAIT=secs: how long to wait for /ready, default max(90, 1 per container))
	$(KIT) up $(if $(TOPOLOGY),--topology $(TOPOLOGY),--scale $(SCALE)) $(if $(MONITORING),--monitoring) $(if $(WAIT),--wait $(WAIT))

render: ## what BACKEND (compose, netns, k8s) would run for TOPOLOGY (default topologies/default.toml)
	$(KIT) --backend $(or $(BACKEND),compose) render $(if $(TOPOLOGY),--topology $(TOPOLOGY))

status: ## table of every node in the compose network (LAN, peers per LAN, groups)
	$(KIT) status

down: ## remove the compose network's containers, networks and volumes
	$(KIT) down

test-compose: image ## compose tier: 3 LANs up, multicast stays in its LAN, dashboards vs a real Prometheus, kill a node
	export BUTTER_COMPOSE_PROJECT=$(TEST_PROJECT) BUTTER_SUBNET_PREFIX=$(TEST_SUBNET_PREFIX) BUTTER_IMAGE=$(IMAGE) \
	  BUTTER_SCALE_SUBNET_PREFIX=$(SCALE_TEST_SUBNET_PREFIX); \
	  BUTTER_COMPOSE_REQUIRE=1 $(CARGO) nextest run --workspace --locked --profile compose --no-fail-fast; \
	  status=$$?; $(KIT) down; exit $$status

bench-kit: image ## image size, start-to-serving time and the memory of the whole compose network (T4, T5)
	$(KIT) bench --scale $(SCALE)

monitor: ## Debian's prometheus on the host at 127.0.0.1:9090 scraping the compose nodes
	$(KIT) monitor

lab-up: release ## the netns lab instead of Docker: 3 subnets × 4 nodes (root; TOPOLOGY=topologies/x.toml: that one)
ifdef TOPOLOGY
	BUTTER_NODE_BIN=$(TARGET_DIR)/release/butter-node $(KIT) --backend netns up --topology $(TOPOLOGY)
else
	netns/lab.sh up --subnets 3 --hosts 4 --bootstrap one-per-subnet --bin target/release/butter-node
	netns/lab.sh status
endif

lab-status: ## table of every node in the netns lab
	netns/lab.sh status

lab-down: ## stop the netns lab and remove everything it created
	netns/lab.sh down

ci: lint test test-netns ## what CI runs

.PHONY: k8s-check k8s-dashboards
k8s-check: ## render every k8s/ overlay (kubectl kustomize) and validate it strictly
	k8s/check.sh

k8s-dashboards: ## copy dashboards/*.json into the k8s monitoring overlay
	k8s/dashboards.sh

# Chaos (kit/chaos, `butter-kit chaos`; also the `butter-chaos` binary): faults through the Engine
# API and nftables, seeded and logged, with a survival check; reports under chaos-out/<scenario>/.
# SEED=N replays a run. The tier's test is tests/chaos.
.PHONY: chaos test-chaos
CHAOS := $(KIT) chaos
CHAOS_SCENARIO ?= compose/chaos/default.toml
CHAOS_OUT ?= chaos-out

chaos: ## kill 2 nodes, then a LAN, heal, check every item (T9) on the compose network (`make up` first if it is down)
	@docker ps -q --filter label=com.docker.compose.project=$${BUTTER_COMPOSE_PROJECT:-butter} --filter label=butter.role | grep -q . || $(MAKE) up
	$(CHAOS) --out $(CHAOS_OUT) run $(CHAOS_SCENARIO) $(if $(SEED),--seed $(SEED))

# Like the compose tier, the chaos tier runs as its own project on its own subnets.
CHAOS_TEST_PROJECT ?= butter-chaos-test
CHAOS_TEST_SUBNET_PREFIX ?= 10.212

test-chaos: image ## chaos tier: the smaller CI scenario (compose/chaos/ci.toml) and each fault once, then down
	export BUTTER_COMPOSE_PROJECT=$(CHAOS_TEST_PROJECT) BUTTER_SUBNET_PREFIX=$(CHAOS_TEST_SUBNET_PREFIX); \
	  BUTTER_CHAOS=1 BUTTER_IMAGE=$(IMAGE) $(CARGO) test --locked -p butter-chaos-tests --test chaos -- --test-threads=1 --nocapture; \
	  status=$$?; $(KIT) down; exit $$status

.PHONY: fuzz
FUZZ_SECS ?= 600
FUZZ_TARGETS ?= $(shell sed -n 's/^name = "\(.*\)"$$/\1/p' fuzz/Cargo.toml | tail -n +2)
fuzz: ## every cargo-fuzz target for FUZZ_SECS (default 600) s, one at a time (nightly, cargo-fuzz; see fuzz/README.md)
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  nice -n 19 $(CARGO) +nightly fuzz run $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECS) || exit 1; \
	done

.PHONY: soak
soak: ## SOAK_NODES (30) butter-node processes on loopback for SOAK_MINS (30) minutes with churn and a client: items lost, RSS, live heap and its drift, connections, tasks (SEED=N replays)
	$(CARGO) build --release --locked -p butter-node -p butter-soak
	$(TARGET_DIR)/release/butter-soak --nodes $(or $(SOAK_NODES),30) --minutes $(or $(SOAK_MINS),30) --out soak-out $(if $(SEED),--seed $(SEED))

# Experiments (experiments/*.toml, `butter-kit run`): the parity experiment on the netns lab and
# on compose (its own project and subnets, like the test tiers), then both reports side by side.
.PHONY: parity
PARITY_EXPERIMENT ?= experiments/parity.toml
PARITY_OUT ?= experiments-out
PARITY_PROJECT ?= butter-parity
PARITY_SUBNET_PREFIX ?= 10.213
PARITY_NAME := $(basename $(notdir $(PARITY_EXPERIMENT)))

parity: image ## the parity experiment on netns (root) then compose: 0 lost on both, back-at-r after each fault side by side (SEED=N)
	$(CARGO) build -q --locked -p butter-kit
	status=0; \
	BUTTER_NODE_BIN=$(abspath $(STATIC_BIN)) $(TARGET_DIR)/debug/butter-kit --backend netns \
	  run $(PARITY_EXPERIMENT) --out $(PARITY_OUT) $(if $(SEED),--seed $(SEED)) || status=1; \
	BUTTER_COMPOSE_PROJECT=$(PARITY_PROJECT) BUTTER_SUBNET_PREFIX=$(PARITY_SUBNET_PREFIX) BUTTER_IMAGE=$(IMAGE) \
	  $(TARGET_DIR)/debug/butter-kit --backend compose \
	  run $(PARITY_EXPERIMENT) --out $(PARITY_OUT) $(if $(SEED),--seed $(SEED)) || status=1; \
	echo; echo "parity: $(PARITY_NAME) on netns and compose"; \
	$(TARGET_DIR)/debug/butter-kit compare $(PARITY_OUT)/netns/$(PARITY_NAME) $(PARITY_OUT)/compose/$(PARITY_NAME) || status=1; \
	exit $$status
