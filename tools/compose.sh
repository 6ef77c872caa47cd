#!/usr/bin/env bash
# `make up` / `make down`: the compose stack (compose.yaml) for real, with Docker Compose
# when a Docker daemon answers, else with podman-compose (pinned in constraints.txt).
#
#   tools/compose.sh up      start every service and wait until relay's health check passes;
#                            a stack already running is left as it is
#   tools/compose.sh down    stop and remove the stack's containers, networks and volume;
#                            nothing running is not an error
#
# COMPOSE_PROJECT_NAME names the stack (default bunny-relay, compose.yaml's `name:`);
# TOXIPROXY_API_PORT, JAEGER_UI_PORT and PROMETHEUS_PORT move the ports it publishes on
# 127.0.0.1.
# A failed `up` takes down what it started, so it leaves nothing running.
set -euo pipefail

cd "$(dirname "$0")/.."
[[ ${1:-} == down ]] && ENGINE_OPTIONAL=1
source tools/engine.sh
if [[ $ENGINE == none ]]; then
    echo "no container engine, so no compose stack to take down"
    exit 0
fi
PROJECT=${COMPOSE_PROJECT_NAME:-bunny-relay}
PYTHON=${PYTHON:-.venv/bin/python}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-120}
LABEL="com.docker.compose.project=$PROJECT"

compose() {
    if [[ $ENGINE == docker ]]; then
        docker compose --project-name "$PROJECT" --file compose.yaml "$@"
    else
        .venv/bin/podman-compose --project-name "$PROJECT" --file compose.yaml "$@"
    fi
}

# project_containers [STATE-FILTER...]: the ids of this stack's containers.
project_containers() {
    engine ps --all --quiet --filter "label=$LABEL" "$@"
}

# taken_ports: "HOST:PORT SERVICE" for every port compose.yaml publishes that something
# already listens on (the ${VAR:-default} in compose.yaml filled from the environment).
taken_ports() {
    "$PYTHON" - <<'EOF'
import os
import re
import socket

import yaml

with open("compose.yaml", encoding="utf-8") as f:
    services = yaml.safe_load(f)["services"]


def fill(text: str) -> str:
    return re.sub(
        r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1)) or m.group(2), text
    )


for name, service in services.items():
    if service.get("profiles"):  # started only when asked for (the grafana profile)
        continue
    for port in service.get("ports", []):
        host, _, rest = fill(str(port)).rpartition(":")
        address, _, published = host.rpartition(":")
        with socket.socket() as probe:
            try:
                probe.bind((address or "0.0.0.0", int(published)))
            except OSError:
                print(f"{address or '0.0.0.0'}:{published} {name}")
EOF
}

# not_running: the services of compose.yaml that have no running container (podman-compose
# goes on, and exits 0, when a container cannot be created).
not_running() {
    local service running
    running=$(engine ps --filter "label=$LABEL" --format '{{ index .Labels "com.docker.compose.service" }}')
    # Services of a profile (grafana) start only when asked for: not missing when absent.
    for service in $("$PYTHON" -c 'import yaml; s = yaml.safe_load(open("compose.yaml"))["services"]; print(*(n for n, v in s.items() if not v.get("profiles")))'); do
        grep -qx "$service" <<<"$running" || echo "$service"
    done
}

wait_for_relay() {
    local relay deadline=$((SECONDS + HEALTH_TIMEOUT))
    relay=$(engine ps --quiet --filter "label=$LABEL" --filter "label=com.docker.compose.service=relay")
    if [[ -z $relay ]]; then
        echo "make up: relay's container is not running" >&2
        return 1
    fi
    # podman runs health checks from systemd timers; without systemd nobody would, so ask
    # for each check here (what `docker compose up --wait` waits for under Docker).
    until engine healthcheck run "$relay" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "make up: relay is not healthy after ${HEALTH_TIMEOUT} s; its log:" >&2
            engine logs --tail 20 "$relay" >&2 || true
            return 1
        fi
        sleep 1
    done
}

up() {
    if [[ -n $(project_containers --filter status=running) ]]; then
        echo "the compose stack $PROJECT is already up (make down stops it)"
        return
    fi
    local taken
    taken=$(taken_ports)
    if [[ -n $taken ]]; then
        while read -r address service; do
            echo "make up: port $address, which compose.yaml publishes for $service, is taken;" \
                "stop what listens there or move it (TOXIPROXY_API_PORT, JAEGER_UI_PORT," \
                "PROMETHEUS_PORT)" >&2
        done <<<"$taken"
        exit 1
    fi
    local start=$SECONDS
    if [[ $ENGINE == docker ]]; then
        if ! compose up --detach --wait --wait-timeout "$HEALTH_TIMEOUT"; then
            echo "make up: the stack did not come up; taking it down" >&2
            down >/dev/null 2>&1 || true
            exit 1
        fi
    else
        # podman-compose's own chatter (systemd and syslog are absent here) goes to a log,
        # shown only when something failed.
        local log missing
        log=$(mktemp)
        compose up --detach >"$log" 2>&1 || true
        missing=$(not_running)
        if [[ -n $missing ]]; then
            echo "make up: these services did not start: $(echo $missing); podman-compose said:" >&2
            grep -i error "$log" | grep -v -e systemd -e syslog >&2 || true
        fi
        rm -f "$log"
        if [[ -n $missing ]] || ! wait_for_relay; then
            echo "make up: the stack did not come up; taking it down" >&2
            down >/dev/null 2>&1 || true
            exit 1
        fi
    fi
    echo "the compose stack $PROJECT is up in $((SECONDS - start)) s:" \
        "Jaeger on 127.0.0.1:${JAEGER_UI_PORT:-16686}, Toxiproxy's API on 127.0.0.1:${TOXIPROXY_API_PORT:-8474}," \
        "Prometheus on 127.0.0.1:${PROMETHEUS_PORT:-9090}"
}

down() {
    local start=$SECONDS
    if [[ -n $(project_containers) ]]; then
        compose down --volumes >/dev/null 2>&1 || true
    fi
    # Whatever `down` missed (a half-started stack, a network of a failed `up`), by label.
    local ids
    ids=$(project_containers)
    [[ -n $ids ]] && engine rm --force --volumes $ids >/dev/null
    for kind in network volume; do
        ids=$(engine "$kind" ls --quiet --filter "label=$LABEL")
        [[ -n $ids ]] && engine "$kind" rm $ids >/dev/null
    done
    if [[ $ENGINE == podman ]]; then
        ids=$(podman pod ls --quiet --filter "name=^pod_$PROJECT\$")
        [[ -n $ids ]] && podman pod rm --force $ids >/dev/null
    fi
    echo "the compose stack $PROJECT is down ($((SECONDS - start)) s)"
}

case ${1:-} in
up) up ;;
down) down ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
