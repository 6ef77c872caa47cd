#!/usr/bin/env bash
# `make service-images`: the images compose.yaml runs besides bunny and relay, under
# compose.yaml's exact names and versions. An image the engine already has is left alone;
# with PULL=yes one it has not is pulled; otherwise (no registry, or the pull failed) it is
# built here from its Go module at the version compose.yaml names, as a `FROM scratch` image
# holding one static binary that runs as a non-root user like the upstream image:
#
#   coredns/coredns            tools/coredns (CoreDNS with the plugins the Corefiles use),
#                              from `make tools`, whose go.mod pins the same release
#   ghcr.io/shopify/toxiproxy  Toxiproxy's server, from `make tools`, same release
#   otel/opentelemetry-collector-contrib
#                              the collector's builder with only the components the
#                              collector configurations in deploy/compose/ use (the
#                              contrib distribution's name, since tail sampling and the
#                              Prometheus exporter are contrib components); rebuilt when
#                              that component list changes
#   prom/prometheus            Prometheus built from its module (PROMETHEUS_MODULE_VERSIONS
#                              below): the query API, scraping and rule evaluation; the web
#                              UI's assets (an npm build) are left out
#   jaegertracing/jaeger       Jaeger v2 built from its module (JAEGER_MODULE_VERSIONS below):
#                              the query API and the OTLP receiver; the web UI, whose
#                              assets come from npm packages the module does not carry,
#                              is Jaeger's placeholder page
#
# Binaries and build contexts stay in .cache/service-images; Go's caches in .cache/go.
set -euo pipefail

cd "$(dirname "$0")/.."
source tools/lib.sh
source tools/engine.sh
WORK="$CACHE/service-images"
BIN="$WORK/bin"
mkdir -p "$BIN"

# Jaeger v2 releases are tagged twice, v2.N and v1.M; only the v1 tag is a Go module version
# (the module path has no /v2). Each v2 release compose.yaml may name, with its v1 twin.
declare -A JAEGER_MODULE_VERSIONS=([2.10.0]=v1.73.0)
# Prometheus 3.x releases are Go module versions v0.3MINOR.PATCH (3.16.0 is v0.316.0); the
# same version tools/install-monitoring-tools.sh pins for promtool.
declare -A PROMETHEUS_MODULE_VERSIONS=([3.16.0]=v0.316.0)
PROMETHEUS_MODULE=github.com/prometheus/prometheus
OTEL_BUILDER_MODULE=go.opentelemetry.io/collector/cmd/builder

# compose_image PREFIX: the image compose.yaml names that starts with PREFIX.
compose_image() {
    awk -v p="$1" '$1 == "image:" && index($2, p) == 1 {print $2; exit}' compose.yaml
}

# qualified NAME: NAME as the registry it would come from knows it (what Docker means by a
# short name), so podman finds the image under the very name compose.yaml gives.
qualified() {
    local first=${1%%/*}
    if [[ $1 != */* ]]; then
        echo "docker.io/library/$1"
    elif [[ $first == *.* || $first == *:* || $first == localhost ]]; then
        echo "$1"
    else
        echo "docker.io/$1"
    fi
}

# wanted IMAGE: true when IMAGE must be built here (not in the engine, and not pulled).
wanted() {
    if image_exists "$(qualified "$1")"; then
        echo "$1: present"
        return 1
    fi
    if [[ ${PULL:-no} == yes ]] && engine pull "$1"; then
        return 1
    fi
    return 0
}

# image_from_binary IMAGE BINARY USER PORTS ENTRYPOINT_JSON [CMD_JSON [LABEL]]: a scratch
# image; LABEL (key=value) marks what it was built from.
image_from_binary() {
    local image=$1 binary=$2 user=$3 ports=$4 entrypoint=$5 cmd=${6:-} label=${7:-} context
    context="$WORK/context/$(basename "$binary")"
    rm -rf "$context"
    mkdir -p "$context"
    cp "$binary" "$context/"
    {
        echo "FROM scratch"
        echo "COPY $(basename "$binary") /$(basename "$binary")"
        echo "USER $user"
        [[ -n $ports ]] && echo "EXPOSE $ports"
        echo "ENTRYPOINT $entrypoint"
        [[ -n $cmd ]] && echo "CMD $cmd"
        [[ -n $label ]] && echo "LABEL $label"
    } >"$context/Dockerfile"
    build_image --quiet --tag "$(qualified "$image")" "$context" >/dev/null
    echo "$image: built from $binary"
}

coredns=$(compose_image coredns/coredns:)
if wanted "$coredns"; then
    coredns_version=$(module_version tools/coredns/go.mod github.com/coredns/coredns)
    if [[ v${coredns##*:} != "$coredns_version" ]]; then
        echo "compose.yaml runs $coredns but tools/coredns/go.mod pins $coredns_version" >&2
        exit 1
    fi
    bash tools/install.sh >/dev/null
    image_from_binary "$coredns" "$PWD/.tools/bin/coredns" 65532:65532 "53 53/udp" '["/coredns"]'
fi

toxiproxy=$(compose_image ghcr.io/shopify/toxiproxy:)
if wanted "$toxiproxy"; then
    toxiproxy_version=$(sed -n 's/^TOXIPROXY_VERSION=//p' tools/install.sh)
    if [[ v${toxiproxy##*:} != "$toxiproxy_version" ]]; then
        echo "compose.yaml runs $toxiproxy but tools/install.sh pins $toxiproxy_version" >&2
        exit 1
    fi
    bash tools/install.sh >/dev/null
    cp .tools/bin/toxiproxy-server "$BIN/toxiproxy"
    image_from_binary "$toxiproxy" "$BIN/toxiproxy" 65532:65532 "8474" '["/toxiproxy"]' \
        '["-host=0.0.0.0"]'
fi

collector=$(compose_image otel/opentelemetry-collector-contrib:)
collector_version=v${collector##*:}
CONTRIB=github.com/open-telemetry/opentelemetry-collector-contrib
# The components the collector configurations in deploy/compose/ use, and no others: OTLP
# in and out, batching, tail sampling (the keep-what-went-wrong alternative), delta to
# cumulative (bunny's batches, one process each, added up per container) and the
# Prometheus endpoint the metrics pipeline serves.
collector_components="receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $collector_version
processors:
  - gomod: go.opentelemetry.io/collector/processor/batchprocessor $collector_version
  - gomod: $CONTRIB/processor/tailsamplingprocessor $collector_version
  - gomod: $CONTRIB/processor/deltatocumulativeprocessor $collector_version
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/otlpexporter $collector_version
  - gomod: go.opentelemetry.io/collector/exporter/debugexporter $collector_version
  - gomod: $CONTRIB/exporter/prometheusexporter $collector_version"
components_digest=$(sha256sum <<<"$collector_components" | cut -c1-16)
if image_exists "$(qualified "$collector")"; then
    built_from=$(engine image inspect --format \
        '{{index .Config.Labels "org.bunnyrelay.collector-components"}}' "$(qualified "$collector")")
    if [[ -n $built_from && $built_from != "$components_digest" ]]; then
        echo "$collector: built here from another component list; building it again"
        engine rmi "$(qualified "$collector")" >/dev/null
    fi
fi
if wanted "$collector"; then
    go_install otelcol-builder "$OTEL_BUILDER_MODULE" "$OTEL_BUILDER_MODULE" "$collector_version"
    start=$SECONDS
    build="$WORK/otelcol"
    rm -rf "$build"
    mkdir -p "$build"
    cat >"$build/manifest.yaml" <<EOF
dist:
  name: otelcol
  description: OpenTelemetry Collector for the bunny/relay compose stack
  output_path: $build/out
  version: ${collector_version#v}
$collector_components
EOF
    "$BIN/otelcol-builder" --config "$build/manifest.yaml"
    cp "$build/out/otelcol" "$BIN/otelcol"
    echo "$collector: collector built in $((SECONDS - start)) s"
    image_from_binary "$collector" "$BIN/otelcol" 10001:10001 "4317 4318 8889" '["/otelcol"]' \
        '["--config=/etc/otelcol/config.yaml"]' "org.bunnyrelay.collector-components=$components_digest"
fi

jaeger=$(compose_image jaegertracing/jaeger:)
if wanted "$jaeger"; then
    module_version=${JAEGER_MODULE_VERSIONS[${jaeger##*:}]:-}
    if [[ -z $module_version ]]; then
        echo "tools/service-images.sh knows no Go module version of $jaeger" >&2
        exit 1
    fi
    start=$SECONDS
    source_dir=$(module_dir github.com/jaegertracing/jaeger "$module_version")
    # Built inside a copy of the module: its go.mod's replace directives apply only there.
    build="$WORK/jaeger-$module_version"
    if [[ ! -d $build ]]; then
        cp -r "$source_dir" "$build.new"
        chmod -R u+w "$build.new"
        mv "$build.new" "$build"
    fi
    (cd "$build" && go build "${GO_FLAGS[@]}" -o "$BIN/jaeger" ./cmd/jaeger)
    echo "$jaeger: Jaeger $module_version built in $((SECONDS - start)) s"
    image_from_binary "$jaeger" "$BIN/jaeger" 10001:10001 "4317 4318 16686" '["/jaeger"]'
fi

prometheus=$(compose_image prom/prometheus:)
if wanted "$prometheus"; then
    release=${prometheus##*:v}
    module_version=${PROMETHEUS_MODULE_VERSIONS[$release]:-}
    if [[ -z $module_version ]]; then
        echo "tools/service-images.sh knows no Go module version of $prometheus" >&2
        exit 1
    fi
    go_install prometheus "$PROMETHEUS_MODULE" "$PROMETHEUS_MODULE/cmd/prometheus" "$module_version" \
        "-X github.com/prometheus/common/version.Version=$release"
    image_from_binary "$prometheus" "$BIN/prometheus" 65534:65534 "9090" '["/prometheus"]' \
        '["--config.file=/etc/prometheus/prometheus.yaml", "--storage.tsdb.path=/data"]'
fi
