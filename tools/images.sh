#!/usr/bin/env bash
# `make images`: bunny-relay/relay:dev and bunny-relay/bunny:dev from the one Dockerfile,
# with podman, or Docker when its daemon answers (tools/engine.sh).
#
# The base image is the Dockerfile's ARG PYTHON_IMAGE:
#   PYTHON_IMAGE=NAME  that image (the engine pulls it when it is not already there);
#   PULL=yes           the Dockerfile's own default (python:3.11 slim) when it can be pulled,
#                      else the local base below;
#   neither            the local base: localhost/debian-python:3.11-bookworm, made here by
#                      mmdebstrap from Debian's packages (python3, python3-venv, ca-certificates),
#                      so no container registry is needed at all. Its tarball is kept in
#                      .cache/images, and the image is imported again only when the engine
#                      has lost it.
#
# Both images are always rebuilt: the engine's layer cache makes that a few seconds when
# nothing changed, and it can never leave a stale image behind.
set -euo pipefail

cd "$(dirname "$0")/.."
source tools/engine.sh
CACHE=${CACHE:-$PWD/.cache}
LOCAL_BASE=localhost/debian-python:3.11-bookworm
BASE_TAR="$CACHE/images/debian-python-3.11-bookworm.tar"
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org}

default_base() {
    sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile
}

make_local_base() {
    if image_exists "$LOCAL_BASE"; then
        echo "base image $LOCAL_BASE: up to date"
        return
    fi
    if [[ ! -f $BASE_TAR ]]; then
        if ! command -v mmdebstrap >/dev/null; then
            echo "make images: mmdebstrap is missing: run \`make container-engine\`" >&2
            exit 1
        fi
        echo "base image $LOCAL_BASE: mmdebstrap from Debian bookworm"
        local start=$SECONDS
        mkdir -p "$(dirname "$BASE_TAR")"
        # No documentation, manual pages or translations: nobody reads them in a container.
        mmdebstrap --quiet --variant=minbase --format=tar \
            --include=python3,python3-venv,python-is-python3,ca-certificates \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            bookworm "$BASE_TAR.new" \
            "deb $DEBIAN_MIRROR/debian bookworm main" \
            "deb $DEBIAN_MIRROR/debian bookworm-updates main" \
            "deb $DEBIAN_MIRROR/debian-security bookworm-security main"
        mv -f "$BASE_TAR.new" "$BASE_TAR"
        echo "base image $LOCAL_BASE: tarball made in $((SECONDS - start)) s"
    fi
    engine import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$BASE_TAR" "$LOCAL_BASE" >/dev/null
    echo "base image $LOCAL_BASE: imported from $BASE_TAR"
}

if [[ -n ${PYTHON_IMAGE:-} ]]; then
    base=$PYTHON_IMAGE
elif [[ ${PULL:-no} == yes ]] && { image_exists "$(default_base)" || engine pull "$(default_base)"; }; then
    base=$(default_base)
else
    make_local_base
    base=$LOCAL_BASE
fi

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
for target in relay bunny; do
    start=$SECONDS
    # The base's name goes in the OCI label for it, so the image's own weight can be told
    # from its base's (tests/e2e/test_images.py holds relay to a budget).
    build_image --quiet --target "$target" --tag "bunny-relay/$target:dev" \
        --label "org.opencontainers.image.base.name=$base" \
        --build-arg "PYTHON_IMAGE=$base" --build-arg "REVISION=$revision" . >/dev/null
    size=$(engine image inspect --format '{{.Size}}' "bunny-relay/$target:dev")
    base_size=$(engine image inspect --format '{{.Size}}' "$base")
    echo "bunny-relay/$target:dev: built from $base in $((SECONDS - start)) s;" \
        "$((size / 1000000)) MB, $(((size - base_size) / 1000000)) MB over its base"
done
