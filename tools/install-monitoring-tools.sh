#!/usr/bin/env bash
# `make monitoring-tools`: install Prometheus's rule checker into .tools/bin.
#
#   .tools/bin/promtool   promtool (PROMETHEUS_VERSION below), which checks and unit-tests
#                         deploy/monitoring/alerts.yaml and parses every dashboard query
#
# Idempotent as tools/install.sh is: a binary built from the pinned module version is left
# alone, and then nothing here touches the network.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="$PWD/.tools/bin"
# Prometheus 3.16.0: the Go module numbers Prometheus 3.x releases as v0.3xx.y.
PROMETHEUS_VERSION=v0.316.0
PROMETHEUS_MODULE=github.com/prometheus/prometheus
source tools/lib.sh

require_go monitoring-tools ">= 1.25, which Prometheus $PROMETHEUS_VERSION needs"
mkdir -p "$BIN"
go_install promtool "$PROMETHEUS_MODULE" "$PROMETHEUS_MODULE/cmd/promtool" "$PROMETHEUS_VERSION"
