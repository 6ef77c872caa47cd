#!/usr/bin/env bash
# `make cluster` / `make cluster-down`: a real Kubernetes control plane on loopback, built
# by tools/install-cluster-tools.sh (`make cluster-tools`):
#
#   etcd, kube-apiserver (its default admission plugins, Pod Security included, and RBAC),
#   kube-controller-manager, kube-scheduler, and kwok, which plays three nodes, one in each
#   of three zones, and marks the pods scheduled to them running. No container runs: what
#   it proves is the API server's word on the charts (schemas, admission, Pod Security,
#   scheduling, Helm's hooks), not the images, probes or network.
#
#   tools/cluster.sh up      start it (a running one is left as it is) and write
#                            $CLUSTER_DIR/kubeconfig; a failed start stops what it started
#   tools/cluster.sh down    stop it and remove $CLUSTER_DIR; nothing running is not an error
#
# CLUSTER_DIR (default .cluster) holds its certificates (made here with openssl: a CA, the
# API server's serving certificate, client certificates for an admin in system:masters, the
# controller-manager and the scheduler, and the service-account key pair), etcd's data, the
# logs and the process ids. Ports are free ones picked at start, written to $CLUSTER_DIR/env.
set -Eeuo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN="$ROOT/.tools/bin"
CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/.cluster}
PKI="$CLUSTER_DIR/pki"
LOGS="$CLUSTER_DIR/logs"
# The order they start in; they stop in reverse, etcd last (the API server hangs without it).
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
ZONES=(zone-a zone-b zone-c)
START_TIMEOUT=${START_TIMEOUT:-90}

running() {
    local pid_file="$CLUSTER_DIR/$1.pid"
    [[ -f $pid_file ]] && kill -0 "$(<"$pid_file")" 2>/dev/null
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# certificate NAME SUBJECT [SAN]: a key and a certificate signed by the cluster's CA.
certificate() {
    local name=$1 subject=$2 san=${3:-} ext
    openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subject" \
        -out "$PKI/$name.csr" 2>/dev/null
    ext="$PKI/$name.ext"
    {
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature, keyEncipherment"
        if [[ -n $san ]]; then
            echo "extendedKeyUsage = serverAuth"
            echo "subjectAltName = $san"
        else
            echo "extendedKeyUsage = clientAuth"
        fi
    } >"$ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
        -CAcreateserial -days 7 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$ext"
}

make_certificates() {
    mkdir -p "$PKI"
    openssl req -x509 -new -newkey rsa:2048 -nodes -days 7 -sha256 -subj "/CN=bunny-relay-test-ca" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
    certificate apiserver "/CN=kube-apiserver" \
        "IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    certificate admin "/O=system:masters/CN=bunny-relay-admin"
    certificate controller-manager "/CN=system:kube-controller-manager"
    certificate scheduler "/CN=system:kube-scheduler"
    openssl genrsa -out "$PKI/service-account.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/service-account.key" -pubout -out "$PKI/service-account.pub" 2>/dev/null
}

# kubeconfig USER: a kubeconfig for USER's client certificate.
kubeconfig() {
    cat <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: bunny-relay
    cluster:
      server: https://127.0.0.1:$API_PORT
      certificate-authority: $PKI/ca.crt
users:
  - name: $1
    user:
      client-certificate: $PKI/$1.crt
      client-key: $PKI/$1.key
contexts:
  - name: bunny-relay
    context: {cluster: bunny-relay, user: $1}
current-context: bunny-relay
EOF
}

start() {
    local name=$1
    shift
    "$BIN/$name" "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
    echo $! >"$CLUSTER_DIR/$name.pid"
}

# wait_until WHAT COMMAND...: poll COMMAND (each poll a real request) until it succeeds.
wait_until() {
    local what=$1 deadline=$((SECONDS + START_TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "make cluster: $what not within ${START_TIMEOUT} s" >&2
            return 1
        fi
        for component in "${COMPONENTS[@]}"; do
            if [[ -f $CLUSTER_DIR/$component.pid ]] && ! running "$component"; then
                echo "make cluster: $component exited; the end of its log:" >&2
                tail -n 15 "$LOGS/$component.log" >&2
                return 1
            fi
        done
        sleep 0.5
    done
}

kubectl() {
    "$BIN/kubectl" --kubeconfig "$CLUSTER_DIR/kubeconfig" "$@"
}

nodes() {
    local i
    for i in "${!ZONES[@]}"; do
        cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    topology.kubernetes.io/zone: ${ZONES[$i]}
    topology.kubernetes.io/region: local
EOF
    done
}

up() {
    if running kube-apiserver; then
        echo "a cluster is already running (kubeconfig $CLUSTER_DIR/kubeconfig; make cluster-down stops it)"
        return
    fi
    for binary in "${COMPONENTS[@]}" kubectl; do
        if [[ ! -x $BIN/$binary ]]; then
            echo "make cluster: $BIN/$binary is missing: run \`make cluster-tools\`" >&2
            exit 1
        fi
    done
    down >/dev/null # what a crashed run may have left
    local start_time=$SECONDS
    mkdir -p "$LOGS"
    trap 'echo "make cluster: failed; stopping what started" >&2; down >/dev/null' ERR
    ETCD_PORT=$(free_port)
    ETCD_PEER_PORT=$(free_port)
    API_PORT=$(free_port)
    SERVICE_IP=10.96.0.1
    make_certificates
    for user in admin controller-manager scheduler; do
        kubeconfig "$user" >"$CLUSTER_DIR/$user.kubeconfig"
    done
    cp "$CLUSTER_DIR/admin.kubeconfig" "$CLUSTER_DIR/kubeconfig"
    printf 'API_PORT=%s\nETCD_PORT=%s\n' "$API_PORT" "$ETCD_PORT" >"$CLUSTER_DIR/env"

    start etcd --name bunny-relay --data-dir "$CLUSTER_DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "bunny-relay=http://127.0.0.1:$ETCD_PEER_PORT" \
        --listen-metrics-urls "" --log-level warn
    wait_until "etcd" python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$ETCD_PORT/health', timeout=2)"

    # A loopback advertise address needs the endpoint reconciler off (it would log an
    # error every 10 s); default admission plugins, so Pod Security is enforced.
    start kube-apiserver --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
        --endpoint-reconciler-type none \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$PKI/service-account.pub" \
        --service-account-signing-key-file "$PKI/service-account.key" \
        --service-cluster-ip-range 10.96.0.0/16 \
        --authorization-mode Node,RBAC
    wait_until "the API server" kubectl get --raw /readyz

    start kube-controller-manager --kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
        --leader-elect=false --secure-port 0 --use-service-account-credentials \
        --service-account-private-key-file "$PKI/service-account.key" \
        --root-ca-file "$PKI/ca.crt" --cluster-name bunny-relay
    start kube-scheduler --kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
        --leader-elect=false --secure-port 0
    start kwok --kubeconfig "$CLUSTER_DIR/admin.kubeconfig" \
        --config "$ROOT/.tools/kwok/stages/stages.yaml" --config "$ROOT/tools/kwok/pod-run-once.yaml" \
        --manage-all-nodes=true --node-lease-duration-seconds 40 \
        --server-address "127.0.0.1:$(free_port)"
    nodes | kubectl apply -f - >/dev/null
    wait_until "three Ready nodes" bash -c \
        "[[ \$('$BIN/kubectl' --kubeconfig '$CLUSTER_DIR/kubeconfig' get nodes --no-headers | grep -cw Ready) == 3 ]]"
    # Pods need their namespace's default ServiceAccount, which the controller-manager makes.
    wait_until "the default ServiceAccount" kubectl --namespace default get serviceaccount default
    trap - ERR
    echo "a cluster is up in $((SECONDS - start_time)) s: Kubernetes" \
        "$(kubectl version -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')," \
        "3 kwok nodes in ${ZONES[*]}; KUBECONFIG=$CLUSTER_DIR/kubeconfig"
}

down() {
    local stopped=0 index component pid
    for ((index = ${#COMPONENTS[@]} - 1; index >= 0; index--)); do
        component=${COMPONENTS[$index]}
        if running "$component"; then
            pid=$(<"$CLUSTER_DIR/$component.pid")
            kill "$pid"
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
            stopped=$((stopped + 1))
        fi
    done
    rm -rf "$CLUSTER_DIR"
    if ((stopped)); then
        echo "the cluster is down ($stopped processes stopped)"
    else
        echo "no cluster was running"
    fi
}

case ${1:-} in
up) up ;;
down) down ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
