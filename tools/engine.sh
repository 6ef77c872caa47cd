# Shared by the scripts that build and run containers (sourced, not run): which engine,
# and how it is called.
#
# ENGINE is docker when a Docker daemon answers, else podman (`make container-engine`
# installs it); set ENGINE to choose. podman reads the project's containers.conf
# (tools/podman/containers.conf), never a change to the machine's own files.

export CONTAINERS_CONF="$PWD/tools/podman/containers.conf"

if [[ -z ${ENGINE:-} ]]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null; then
        ENGINE=podman
    elif [[ -n ${ENGINE_OPTIONAL:-} ]]; then
        ENGINE=none # nothing can be running, so there is nothing to do
    else
        echo "no container engine: run \`make container-engine\` (podman), or start Docker" >&2
        exit 1
    fi
fi

# engine ARGS...: the engine's command line.
engine() {
    "$ENGINE" "$@"
}

# image_exists NAME: is NAME in the engine's image store?
image_exists() {
    if [[ $ENGINE == podman ]]; then
        podman image exists "$1"
    else
        docker image inspect "$1" >/dev/null 2>&1
    fi
}

# build_image ARGS...: `ENGINE build` with what this machine kind needs under podman: the
# Docker image format (it keeps HEALTHCHECK) and the host's CA bundle during RUN steps, so
# that pip trusts what the host trusts (it is not kept in the image).
build_image() {
    if [[ $ENGINE == podman ]]; then
        local extra=(--format docker)
        if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
            extra+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
        fi
        podman build "${extra[@]}" "$@"
    else
        docker build "$@"
    fi
}
