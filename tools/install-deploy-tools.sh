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
source tools/lib.sh
PSA_VERSION=$(module_version tools/pod-security/go.mod "$PSA_MODULE")
KUBERNETES_VALIDATE_VERSION=1.37.0
# The two newest Kubernetes minors in kubernetes-validate 1.37.0; both are offered by
# AKS and EKS (check each cloud's version calendar when you bump this).
KUBERNETES_VERSIONS="1.36.0 1.37.0"

require_go deploy-tools ">= 1.26"
if [[ -z $PSA_VERSION ]]; then
    echo "make deploy-tools: no $PSA_MODULE requirement in tools/pod-security/go.mod" >&2
    exit 1
fi
mkdir -p "$BIN"

# Helm as its release is built: stamped with its version and commit, and with the
# Kubernetes minor of its client libraries, which is what `helm template` assumes without
# --kube-version (a plain `go install` says v3.21 and assumes Kubernetes v1.20, below the
# charts' kubeVersion). A helm that does not report the pinned version is rebuilt.
if [[ -x $BIN/helm && $("$BIN/helm" version --template '{{.Version}}' 2>/dev/null) != "$HELM_VERSION" ]]; then
    rm -f "$BIN/helm"
fi
if ! built_from "$BIN/helm" "$HELM_MODULE" "$HELM_VERSION"; then
    helm_info=$(go mod download -json "$HELM_MODULE@$HELM_VERSION")
    helm_dir=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$helm_info")
    helm_commit=$(sed -n 's/^\t\t"Hash": "\(.*\)",\{0,1\}$/\1/p' <<<"$helm_info")
    client_go=$(module_version "$helm_dir/go.mod" k8s.io/client-go) # v0.MINOR.PATCH
    kube_minor=$(cut -d. -f2 <<<"$client_go")
    helm_ldflags="-X $HELM_MODULE/internal/version.version=$HELM_VERSION"
    helm_ldflags+=" -X $HELM_MODULE/internal/version.gitCommit=$helm_commit"
    helm_ldflags+=" -X $HELM_MODULE/internal/version.gitTreeState=clean"
    for package in pkg/chartutil pkg/lint/rules; do
        helm_ldflags+=" -X $HELM_MODULE/$package.k8sVersionMajor=1"
        helm_ldflags+=" -X $HELM_MODULE/$package.k8sVersionMinor=$kube_minor"
    done
fi
go_install helm "$HELM_MODULE" "$HELM_MODULE/cmd/helm" "$HELM_VERSION" "${helm_ldflags:-}"
go_install kubeconform "$KUBECONFORM_MODULE" "$KUBECONFORM_MODULE/cmd/kubeconform" "$KUBECONFORM_VERSION"

go_build pod-security-check tools/pod-security "$PSA_MODULE" "$PSA_VERSION"

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
