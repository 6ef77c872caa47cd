#!/usr/bin/env bash
# `make tools`: install the lab's pinned DNS server, fault proxy and load generator into .tools/bin.
#
#   .tools/bin/coredns            CoreDNS, the release pinned in tools/coredns/go.mod, built
#                                 from tools/coredns/main.go with only the plugins we use
#   .tools/bin/toxiproxy-server   Toxiproxy (TOXIPROXY_VERSION below): the tunnel's fault proxy
#   .tools/bin/toxiproxy-cli      its command line, for people exploring `make stack`
#   .tools/bin/ghz                ghz (GHZ_VERSION below): the outside gRPC load generator
#                                 `make bench` runs against relay
#
# Idempotent: a binary that is present, was built from the pinned module version and is newer
# than its sources is left alone, and then nothing here touches the network (`go version -m`
# reads the build information compiled into the binary).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="$PWD/.tools/bin"
TOXIPROXY_VERSION=v2.12.0
TOXIPROXY_MODULE=github.com/Shopify/toxiproxy/v2
# The newest release the Go module proxy serves (2025-12-07). Its version list (and so
# `@latest`) stops at v0.93.0, but the later release tags resolve when asked for by name.
GHZ_VERSION=v0.121.0
GHZ_MODULE=github.com/bojand/ghz
COREDNS_MODULE=github.com/coredns/coredns
COREDNS_VERSION=$(awk -v m="$COREDNS_MODULE" '{for (i = 1; i < NF; i++) if ($i == m && $(i + 1) ~ /^v/) print $(i + 1)}' tools/coredns/go.mod)

# Never let the go command fetch a different toolchain behind our back.
export GOTOOLCHAIN=local CGO_ENABLED=0

if ! command -v go >/dev/null; then
    echo "make tools: the go command is missing; install Go >= 1.25 (CoreDNS $COREDNS_VERSION needs it)" >&2
    exit 1
fi
if [[ -z $COREDNS_VERSION ]]; then
    echo "make tools: no $COREDNS_MODULE requirement in tools/coredns/go.mod" >&2
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

if built_from "$BIN/coredns" "$COREDNS_MODULE" "$COREDNS_VERSION" && newer_than "$BIN/coredns" tools/coredns; then
    echo "coredns $COREDNS_VERSION: up to date"
else
    echo "coredns $COREDNS_VERSION: building tools/coredns"
    start=$SECONDS
    (cd tools/coredns && go build "${flags[@]}" -o "$BIN/coredns.new" .)
    mv -f "$BIN/coredns.new" "$BIN/coredns"
    echo "coredns $COREDNS_VERSION: built in $((SECONDS - start)) s"
fi

# `go install pkg@version` names a binary after its directory (server, cli): install into a
# scratch GOBIN and give them the names Toxiproxy's own releases use.
install_toxiproxy() { # PACKAGE NAME
    local scratch
    scratch=$(mktemp -d)
    GOBIN=$scratch go install "${flags[@]}" "$TOXIPROXY_MODULE/cmd/$1@$TOXIPROXY_VERSION"
    mv -f "$scratch/$1" "$BIN/$2"
    rm -rf "$scratch"
}

for pair in server:toxiproxy-server cli:toxiproxy-cli; do
    package=${pair%%:*} name=${pair#*:}
    if built_from "$BIN/$name" "$TOXIPROXY_MODULE" "$TOXIPROXY_VERSION"; then
        echo "$name $TOXIPROXY_VERSION: up to date"
    else
        echo "$name $TOXIPROXY_VERSION: go install $TOXIPROXY_MODULE/cmd/$package@$TOXIPROXY_VERSION"
        start=$SECONDS
        install_toxiproxy "$package" "$name"
        echo "$name $TOXIPROXY_VERSION: installed in $((SECONDS - start)) s"
    fi
done

if built_from "$BIN/ghz" "$GHZ_MODULE" "$GHZ_VERSION"; then
    echo "ghz $GHZ_VERSION: up to date"
else
    echo "ghz $GHZ_VERSION: go install $GHZ_MODULE/cmd/ghz@$GHZ_VERSION"
    start=$SECONDS
    scratch=$(mktemp -d)
    GOBIN=$scratch go install "${flags[@]}" "$GHZ_MODULE/cmd/ghz@$GHZ_VERSION"
    mv -f "$scratch/ghz" "$BIN/ghz"
    rm -rf "$scratch"
    echo "ghz $GHZ_VERSION: installed in $((SECONDS - start)) s"
fi
