#!/usr/bin/env bash
# `make tools`: install the lab's pinned DNS server, fault proxy and load generator into .tools/bin.
#
#   .tools/bin/coredns            CoreDNS, the release pinned in tools/coredns/go.mod, built
#                                 from tools/coredns/main.go with only the plugins we use
#   .tools/bin/toxiproxy-server   Toxiproxy (TOXIPROXY_VERSION below): the tunnel's fault proxy
#   .tools/bin/toxiproxy-cli      its command line, for people exploring `make stack`
#   .tools/bin/ghz                ghz (GHZ_VERSION below): the outside gRPC load generator
#                                 `make bench` runs against relay
#   .tools/bin/grpcurl            grpcurl (GRPCURL_VERSION below): the gRPC command line the
#                                 reflection tests drive, knowing relay only by reflection
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
GRPCURL_VERSION=v1.9.4
GRPCURL_MODULE=github.com/fullstorydev/grpcurl
COREDNS_MODULE=github.com/coredns/coredns
source tools/lib.sh
COREDNS_VERSION=$(module_version tools/coredns/go.mod "$COREDNS_MODULE")

require_go tools ">= 1.25, which CoreDNS $COREDNS_VERSION needs"
if [[ -z $COREDNS_VERSION ]]; then
    echo "make tools: no $COREDNS_MODULE requirement in tools/coredns/go.mod" >&2
    exit 1
fi
mkdir -p "$BIN"

go_build coredns tools/coredns "$COREDNS_MODULE" "$COREDNS_VERSION"
go_install toxiproxy-server "$TOXIPROXY_MODULE" "$TOXIPROXY_MODULE/cmd/server" "$TOXIPROXY_VERSION"
go_install toxiproxy-cli "$TOXIPROXY_MODULE" "$TOXIPROXY_MODULE/cmd/cli" "$TOXIPROXY_VERSION"
go_install ghz "$GHZ_MODULE" "$GHZ_MODULE/cmd/ghz" "$GHZ_VERSION"
go_install grpcurl "$GRPCURL_MODULE" "$GRPCURL_MODULE/cmd/grpcurl" "$GRPCURL_VERSION"
