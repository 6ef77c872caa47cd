#!/usr/bin/env bash
# `make cluster-tools`: the pieces of a real Kubernetes control plane, built from the Go
# module proxy into .tools/bin (no binary downloads, every version pinned here):
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#                  k8s.io/kubernetes KUBERNETES_VERSION, built with the version the release
#                  stamps into its binaries (without it the server says v0.0.0-master and
#                  Helm refuses the charts' `kubeVersion: >=1.30.0-0`)
#   etcd           go.etcd.io/etcd/server/v3 ETCD_VERSION (kwok's watches need etcd >= 3.5.13,
#                  newer than Debian's etcd-server)
#   kwok           sigs.k8s.io/kwok KWOK_VERSION: fake nodes whose pods are marked running
#   .tools/kwok/stages/stages.yaml   the stages kwok plays (its module ships them)
#   .tools/cert-manager/crds/   cert-manager's CRDs (CERT_MANAGER_VERSION), which the charts'
#                  Certificates need (its Go module ships them under deploy/crds)
#   .tools/prometheus-operator/crds/   the prometheus-operator's ServiceMonitor, PodMonitor and
#                  PrometheusRule CRDs (PROMETHEUS_OPERATOR_VERSION), which the charts'
#                  monitoring resources need (its Go module ships them under example/)
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod points every k8s.io/* library at
# ./staging, which a module download does not have. A throwaway module under .cache requires
# it and replaces each staging library with its published release (v0.MINOR.PATCH); etcd's
# server module needs a throwaway module of its own for the same reason.
#
# Idempotent: binaries built from the pinned versions are left alone, and then nothing here
# touches the network. Module and build caches stay in .cache (tools/lib.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="$PWD/.tools/bin"
KUBERNETES_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
KWOK_VERSION=v0.8.0
CERT_MANAGER_VERSION=v1.21.2
PROMETHEUS_OPERATOR_VERSION=v0.85.0
KUBERNETES_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kubectl"
source tools/lib.sh

require_go cluster-tools ">= 1.26, which Kubernetes $KUBERNETES_VERSION needs"
mkdir -p "$BIN"

# The staging libraries' release: Kubernetes v1.MINOR.PATCH ships them as v0.MINOR.PATCH.
staging_version=v0.${KUBERNETES_VERSION#v1.}
kube_minor=${KUBERNETES_VERSION#v1.}
kube_minor=${kube_minor%%.*}

kubernetes_built() {
    local command
    for command in $KUBERNETES_COMMANDS; do
        built_from "$BIN/$command" k8s.io/kubernetes "$KUBERNETES_VERSION" || return 1
    done
}

if kubernetes_built; then
    echo "Kubernetes $KUBERNETES_VERSION ($KUBERNETES_COMMANDS): up to date"
else
    echo "Kubernetes $KUBERNETES_VERSION: building $KUBERNETES_COMMANDS"
    start=$SECONDS
    module="$CACHE/build/kubernetes-$KUBERNETES_VERSION"
    rm -rf "$module"
    mkdir -p "$module"
    source_dir=$(module_dir k8s.io/kubernetes "$KUBERNETES_VERSION")
    {
        echo "module bunnyrelay.local/kubernetes-build"
        echo
        awk '$1 == "go" {print; exit}' "$source_dir/go.mod"
        echo
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo
        echo "replace ("
        # sample-cli-plugin is never published, and nothing built here imports it.
        awk -v v="$staging_version" '$2 == "=>" && $3 ~ /^\.\/staging\// && $1 != "k8s.io/sample-cli-plugin" {
            printf "\t%s => %s %s\n", $1, $1, v }' "$source_dir/go.mod"
        echo ")"
    } >"$module/go.mod"
    packages=()
    for command in $KUBERNETES_COMMANDS; do
        packages+=("k8s.io/kubernetes/cmd/$command")
    done
    version_flags="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    version_flags+=" -X k8s.io/component-base/version.gitMajor=1"
    version_flags+=" -X k8s.io/component-base/version.gitMinor=$kube_minor"
    version_flags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    (
        cd "$module"
        go get "${packages[@]/%/@$KUBERNETES_VERSION}"
        for command in $KUBERNETES_COMMANDS; do
            go build -trimpath -ldflags "-s -w $version_flags" -o "$BIN/$command.new" \
                "k8s.io/kubernetes/cmd/$command"
            mv -f "$BIN/$command.new" "$BIN/$command"
            echo "  $command: built at $((SECONDS - start)) s"
        done
    )
    echo "Kubernetes $KUBERNETES_VERSION: built in $((SECONDS - start)) s"
fi

if built_from "$BIN/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"; then
    echo "etcd $ETCD_VERSION: up to date"
else
    echo "etcd $ETCD_VERSION: building"
    start=$SECONDS
    module="$CACHE/build/etcd-$ETCD_VERSION"
    rm -rf "$module"
    mkdir -p "$module"
    printf 'module bunnyrelay.local/etcd-build\n\ngo 1.25\n' >"$module/go.mod"
    (
        cd "$module"
        go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
        go build "${GO_FLAGS[@]}" -o "$BIN/etcd.new" go.etcd.io/etcd/server/v3
    )
    mv -f "$BIN/etcd.new" "$BIN/etcd"
    echo "etcd $ETCD_VERSION: built in $((SECONDS - start)) s"
fi

go_install kwok sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"

# kwok's own "fast" set: nodes turn Ready and keep their leases (else the node lifecycle
# controller would taint them unreachable and evict every pod), pods run at once, and a test
# pod completes.
copy_kwok_stages() {
    local stage file
    for stage in node/fast node/heartbeat-with-lease pod/fast; do
        for file in "$1/kustomize/stage/$stage"/*.yaml; do
            [[ $(basename "$file") == kustomization.yaml ]] && continue
            echo "---"
            cat "$file"
        done
    done >"$2/stages.yaml"
}
copy_from_module "kwok stages" sigs.k8s.io/kwok "$KWOK_VERSION" \
    "$PWD/.tools/kwok/stages" copy_kwok_stages

copy_cert_manager_crds() {
    cp "$1"/deploy/crds/*.yaml "$2/"
}
copy_from_module "cert-manager CRDs" github.com/cert-manager/cert-manager "$CERT_MANAGER_VERSION" \
    "$PWD/.tools/cert-manager/crds" copy_cert_manager_crds

copy_prometheus_operator_crds() {
    local kind
    for kind in servicemonitors podmonitors prometheusrules; do
        cp "$1/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$2/"
    done
}
copy_from_module "prometheus-operator CRDs" github.com/prometheus-operator/prometheus-operator \
    "$PROMETHEUS_OPERATOR_VERSION" "$PWD/.tools/prometheus-operator/crds" copy_prometheus_operator_crds
