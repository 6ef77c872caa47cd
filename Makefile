# One entry point for every routine task. `make demo` and `make test` do all set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROTOS := $(wildcard proto/bunnyrelay/v1/*.proto)
# PULL=yes: take base and service images from their registries when they can be pulled.
PULL ?= no
export PULL

.PHONY: install proto lint test demo clean tools stack deploy-tools deploy-files images bench fleet

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --constraint constraints.txt --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# The lab (lab/: DNS server, OTLP sink, demo, bench, protogen) is development code that
	# is never installed with the services; this path entry makes it importable in .venv.
	echo "$(CURDIR)" > $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/bunnyrelay-lab.pth
	touch $@

# Regenerate the committed contract code (tests/test_contract.py fails when it is stale).
proto: $(STAMP)
	$(BIN)/python -m lab.protogen .

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bunnyrelay bunny relay lab tests

test: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/python -m lab.demo

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .demo

# The Go module and build caches and the base image's tarball (.cache, several GB): kept
# by `make clean` so that rebuilding .tools or the images costs nothing; this frees them.
.PHONY: clean-cache
clean-cache:
	rm -rf .cache

# Pinned CoreDNS and Toxiproxy in .tools/bin for the DNS lab; does nothing (and no network)
# when they are already there at the pinned versions. Go is the only prerequisite.
tools:
	bash tools/install.sh

# The tests drive real CoreDNS processes (tests/lab/test_coredns_chain.py).
test: tools

# The cross-cloud DNS chain (cluster DNS -> forwarder -> tunnel -> AWS resolver -> private zone)
# as real CoreDNS processes, in network namespaces when run as root; until Ctrl-C.
stack: $(STAMP) tools
	$(BIN)/python -m lab.stack

# Real services that the tests start themselves (redis-server for the shared idempotency
# store; dnsmasq, a DNS forwarder that drops a query its upstream leaves unanswered, for
# tests/bunny/test_diagnose_hops.py); installs Debian's packages when they are missing
# (dnsmasq-base: the program without a system service). Needs root, as CI has.
.PHONY: services
services:
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)
	command -v dnsmasq >/dev/null || (apt-get update && apt-get install -y dnsmasq-base)
	dnsmasq --version | head -1

# The store tests run a real redis-server (tests/relay/stores, tests/faults).
test: services

# A container engine for `make images`, `make up` and the image and stack tests: podman
# and what it runs with (Debian's packages), and mmdebstrap, which makes the base image
# locally when no registry serves python:3.11-slim. Installs only what is missing; root.
CONTAINER_PACKAGES := podman buildah runc netavark aardvark-dns iptables uidmap fuse-overlayfs \
	slirp4netns mmdebstrap
.PHONY: container-engine
container-engine:
	@missing=$$(for p in $(CONTAINER_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [[ -n $$missing ]] && ! { [[ $(PULL) == yes ]] && docker info >/dev/null 2>&1; }; then \
		apt-get update && apt-get install -y --no-install-recommends $$missing; \
	fi

# A second Python environment with the OpenTelemetry packages one release before the pinned
# ones, which bunnyrelay.otlpencode was not checked against: there it must step aside for the
# SDK's own encoder (tests/bunnyrelay/otlpencode). Everything else at constraints.txt's pins;
# does nothing (and no network) when it is there.
OTEL_OTHER := .tools/otel-other
OTEL_OTHER_VERSION := 1.44.0
OTEL_OTHER_STAMP := $(OTEL_OTHER)/.installed-$(OTEL_OTHER_VERSION)
.PHONY: otel-other
otel-other: $(OTEL_OTHER_STAMP)

$(OTEL_OTHER_STAMP): constraints.txt
	rm -rf $(OTEL_OTHER)
	$(PYTHON) -m venv $(OTEL_OTHER)
	grep -v '^opentelemetry-' constraints.txt > $(OTEL_OTHER)/constraints.txt
	$(OTEL_OTHER)/bin/pip install --quiet --constraint $(OTEL_OTHER)/constraints.txt --upgrade pip
	$(OTEL_OTHER)/bin/pip install --quiet --constraint $(OTEL_OTHER)/constraints.txt \
	  grpcio protobuf $(foreach dist,sdk exporter-otlp-proto-grpc exporter-otlp-proto-http,opentelemetry-$(dist)==$(OTEL_OTHER_VERSION))
	touch $@

test: otel-other

# Pinned Helm, kubeconform, the Pod Security Admission checker and the Kubernetes JSON
# schemas in .tools for tests/deploy; does nothing (and no network) when they are there.
deploy-tools:
	PYTHON=$(PYTHON) bash tools/install-deploy-tools.sh

# The charts, the compose stack and the image are checked by real tools (tests/deploy).
test: deploy-tools

# Rewrite the CoreDNS files the charts and the compose stack ship from deploy/coredns/
# (tests/deploy fail when one is stale).
deploy-files: $(STAMP)
	$(BIN)/python -m lab.deployfiles

# Rewrite the Grafana dashboards in deploy/monitoring/dashboards/ from lab/dashboards.py
# (tests/monitoring fails when one is stale).
.PHONY: dashboards
dashboards: $(STAMP)
	$(BIN)/python -m lab.dashboards

# The relay and bunny images from the one Dockerfile, with podman (or Docker when its daemon
# answers), on a base image made here from Debian's packages unless PYTHON_IMAGE names one
# or PULL=yes can pull the Dockerfile's own (tools/images.sh).
images: container-engine
	bash tools/images.sh

# The images run hardened as the chart and compose run them (tests/e2e/test_images.py).
test: images

# The images compose.yaml runs besides bunny and relay (CoreDNS, Toxiproxy, the OpenTelemetry
# Collector, Jaeger), under its exact names: pulled with PULL=yes, else built from their Go
# modules at the versions it names (tools/service-images.sh). Nothing when they are there.
.PHONY: service-images up down
service-images: container-engine
	bash tools/service-images.sh

# The whole compose stack for real (tools/compose.sh): up until relay is healthy; a port
# taken is named, and a failed start leaves nothing running. `make down` removes it all.
up: $(STAMP) images service-images
	bash tools/compose.sh up

down:
	bash tools/compose.sh down

# The stack's end-to-end test brings up its own (tests/e2e/test_compose_stack.py).
test: service-images

# A real Kubernetes control plane's binaries (kube-apiserver, controller-manager, scheduler,
# kubectl, etcd, kwok) built from the Go module proxy into .tools/bin, pinned in
# tools/install-cluster-tools.sh; nothing (and no network) when they are there.
.PHONY: cluster-tools cluster cluster-down
cluster-tools:
	command -v openssl >/dev/null || (apt-get update && apt-get install -y openssl)
	bash tools/install-cluster-tools.sh

# That control plane on loopback with kwok's fake nodes in three zones (tools/cluster.sh);
# KUBECONFIG=.cluster/kubeconfig. Starting one that runs says so; cluster-down stops it.
cluster: cluster-tools
	bash tools/cluster.sh up

cluster-down:
	bash tools/cluster.sh down

# Pinned promtool in .tools/bin (tools/install-monitoring-tools.sh), which checks and
# unit-tests the alerts and parses the dashboards' queries (tests/monitoring); does
# nothing (and no network) when it is there.
.PHONY: monitoring-tools
monitoring-tools:
	bash tools/install-monitoring-tools.sh

test: monitoring-tools

# The charts against that control plane, started by the tests in a folder of their own
# (tests/e2e/test_cluster_charts.py).
test: cluster-tools deploy-tools

# bunny and relay against raw grpc.aio measured in the same run: one table of
# ratios, ghz beside it and the DNS lookup benchmark, in 4 rounds; rewrites
# docs/benchmarks.md (about 15 minutes). BENCH_ARGS passes flags, e.g. BENCH_ARGS="--cases raw-unary,unary-100 --no-dns".
BENCH_ARGS ?=
bench: $(STAMP) tools
	$(BIN)/python -m lab.bench $(BENCH_ARGS)

# What a fleet of bunny pods costs the VPN tunnel: 1, 10 and 100 clients, each with bunny's
# own resolver and cache and a pod's resolv.conf, at two job rates, against the CoreDNS chain;
# counts the DNS queries that cross the tunnel (about 13 minutes; no phase starts after 20).
# FLEET_ARGS passes flags, e.g. FLEET_ARGS="--clients 10 --cache on --naming ndots".
FLEET_ARGS ?=
fleet: $(STAMP) tools
	$(BIN)/python -m lab.fleet $(FLEET_ARGS)
