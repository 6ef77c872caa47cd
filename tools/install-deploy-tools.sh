#!/usr/bin/env bash
# `make deploy-tools`: install what checks the image, the compose stack and the Helm
# charts (tests/deploy) into .tools, every version pinned here.
#
#   .tools/bin/helm                  Helm (HELM_VERSION), `go install`ed
#   .tools/bin/kubeconform           kubeconform (KUBECONFORM_VERSION), `go install`ed
#   .tools/bin/pod-security-check    tools/pod-security/main.go: the Pod Security Admission
#                                    library (pinned in its go.mod) as a command
#   .tools/kubernetes-json-schema/   the strict JSON schemas of KUBERNETES_VERSIONS, taken
#                                    from the kubernetes-validate wheel on PyPI
#
# The schemas are what make validation offline: kubeconform is pointed at this folder
# and never at a URL. The wheel's schemas name their shared definitions by an absolute
# kubernetes.io URL ("$id" plus "$ref": "/api/_definitions.json#…"), which kubeconform
# would try to download; each kind's file loses its "$id" and refers to the
# _definitions.json beside it instead. Nothing else in them changes.
#
# Idempotent: a binary that was built from the pinned module version (and is newer than
# its sources) and a schema folder stamped with the pinned versions are left alone, and
# then nothing here touches the network.
set -euo pipefail

cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
BIN="$TOOLS/bin"
PYTHON=${PYTHON:-python3}

HELM_MODULE=helm.sh/helm/v3
HELM_VERSION=v3.21.4
KUBECONFORM_MODULE=github.com/yannh/kubeconform
KUBECONFORM_VERSION=v0.8.0
PSA_MODULE=k8s.io/pod-security-admission
PSA_VERSION=$(awk -v m="$PSA_MODULE" '$1 == m && $2 ~ /^v/ {print $2}' tools/pod-security/go.mod)
KUBERNETES_VALIDATE_VERSION=1.37.0
# The two newest Kubernetes minors in kubernetes-validate 1.37.0; both are offered by
# AKS and EKS (check each cloud's version calendar when you bump this).
KUBERNETES_VERSIONS="1.36.0 1.37.0"

# Never let the go command fetch a different toolchain behind our back.
export GOTOOLCHAIN=local CGO_ENABLED=0

if ! command -v go >/dev/null; then
    echo "make deploy-tools: the go command is missing; install Go >= 1.26" >&2
    exit 1
fi
if [[ -z $PSA_VERSION ]]; then
    echo "make deploy-tools: no $PSA_MODULE requirement in tools/pod-security/go.mod" >&2
    exit 1
fi

# built_from BINARY MODULE VERSION: was BINARY linked from MODULE at exactly VERSION?
built_from() {
    [[ -x $1 ]] && go version -m "$1" 2>/dev/null |
        awk -v m="$2" -v v="$3" '($1 == "mod" || $1 == "dep") && $2 == m && $3 == v {ok = 1} END {exit !ok}'
}

# newer_than BINARY PATH...: is BINARY newer than every file under PATH...?
newer_than() {
    local binary=$1
    shift
    [[ -z $(find "$@" -type f -newer "$binary" -print -quit) ]]
}

mkdir -p "$BIN"
flags=(-trimpath -ldflags "-s -w")

# go_install NAME MODULE PACKAGE VERSION: `go install PACKAGE@VERSION` as .tools/bin/NAME.
go_install() {
    local name=$1 module=$2 package=$3 version=$4 scratch start
    if built_from "$BIN/$name" "$module" "$version"; then
        echo "$name $version: up to date"
        return
    fi
    echo "$name $version: go install $package@$version"
    start=$SECONDS
    scratch=$(mktemp -d)
    GOBIN=$scratch go install "${flags[@]}" "$package@$version"
    mv -f "$scratch/$(basename "$package")" "$BIN/$name"
    rm -rf "$scratch"
    echo "$name $version: installed in $((SECONDS - start)) s"
}

go_install helm "$HELM_MODULE" "$HELM_MODULE/cmd/helm" "$HELM_VERSION"
go_install kubeconform "$KUBECONFORM_MODULE" "$KUBECONFORM_MODULE/cmd/kubeconform" "$KUBECONFORM_VERSION"

if built_from "$BIN/pod-security-check" "$PSA_MODULE" "$PSA_VERSION" &&
    newer_than "$BIN/pod-security-check" tools/pod-security; then
    echo "pod-security-check ($PSA_MODULE $PSA_VERSION): up to date"
else
    echo "pod-security-check ($PSA_MODULE $PSA_VERSION): building tools/pod-security"
    start=$SECONDS
    (cd tools/pod-security && go build "${flags[@]}" -o "$BIN/pod-security-check.new" .)
    mv -f "$BIN/pod-security-check.new" "$BIN/pod-security-check"
    echo "pod-security-check ($PSA_MODULE $PSA_VERSION): built in $((SECONDS - start)) s"
fi

SCHEMAS="$TOOLS/kubernetes-json-schema"
stamp="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION $KUBERNETES_VERSIONS"
if [[ -f $SCHEMAS/STAMP && $(<"$SCHEMAS/STAMP") == "$stamp" ]]; then
    echo "Kubernetes schemas $KUBERNETES_VERSIONS: up to date"
else
    echo "Kubernetes schemas $KUBERNETES_VERSIONS: from kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
    start=$SECONDS
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$scratch" \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    rm -rf "$SCHEMAS.new"
    "$PYTHON" - "$scratch"/kubernetes_validate-*.whl "$SCHEMAS.new" $KUBERNETES_VERSIONS <<'EOF'
import json
import sys
import zipfile
from pathlib import Path

wheel, dest, *versions = sys.argv[1:]
prefix = "kubernetes_validate/kubernetes-json-schema/"
wanted = {f"v{version}-local-strict" for version in versions}
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if not name.startswith(prefix) or not name.endswith(".json"):
            continue
        folder, _, file = name[len(prefix) :].partition("/")
        if folder not in wanted or "/" in file:
            continue
        text = archive.read(name).decode("utf-8")
        if file != "_definitions.json":
            schema = json.loads(text)
            schema.pop("$id", None)
            text = json.dumps(schema, indent=1).replace(
                '"/api/_definitions.json#', '"_definitions.json#'
            )
        target = Path(dest) / folder / file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
missing = sorted(wanted - {p.name for p in Path(dest).iterdir()})
if missing:
    sys.exit(f"kubernetes-validate has no {', '.join(missing)}")
EOF
    echo "$stamp" >"$SCHEMAS.new/STAMP"
    rm -rf "$SCHEMAS"
    mv "$SCHEMAS.new" "$SCHEMAS"
    echo "Kubernetes schemas $KUBERNETES_VERSIONS: installed in $((SECONDS - start)) s"
fi
