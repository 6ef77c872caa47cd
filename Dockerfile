# syntax=docker/dockerfile:1
#
# One recipe, two images that share every layer but the last:
#
#   docker build --target relay -t bunny-relay/relay .    # ENTRYPOINT relay, CMD serve
#   docker build --target bunny -t bunny-relay/bunny .    # ENTRYPOINT bunny
#
# The final stages hold the Python runtime and one virtual environment, no compiler
# and no package manager cache; they run as the fixed non-root UID 10001 and write
# nothing to their root filesystem but relay's state directory, /var/lib/relay, where
# a volume belongs (Kubernetes' readOnlyRootFilesystem works with one).
# tests/deploy/test_image.py builds what /opt/bunnyrelay would hold from this build
# context and runs both entry points from it.

# Pinned: bump deliberately (and pin by digest in your own registry if you copy this).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: a virtual environment with the exact dependency versions --------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/bunnyrelay
# Dependencies first, from pyproject.toml's list pinned by constraints.txt, so that
# changing our code does not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/bunnyrelay/bin/pip install --no-cache-dir --constraint constraints.txt --requirement requirements.txt
COPY README.md ./
COPY bunnyrelay/ bunnyrelay/
COPY bunny/ bunny/
COPY relay/ relay/
# Compiled to bytecode at install, so nothing is written at run time. Then the installers
# go (pip and setuptools are a third of the environment) and both commands must still start.
RUN /opt/bunnyrelay/bin/pip install --no-cache-dir --no-deps --constraint constraints.txt . \
    && /opt/bunnyrelay/bin/python -m pip uninstall --quiet --yes pip setuptools \
    && /opt/bunnyrelay/bin/relay --help > /dev/null \
    && /opt/bunnyrelay/bin/bunny --help > /dev/null

# ---- runtime: what both images share ------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="bunny-relay" \
      org.opencontainers.image.description="A reference pair of gRPC microservices whose cross-cloud DNS lookups are retried and traced hop by hop." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/bunny-relay/bunny-relay" \
      org.opencontainers.image.documentation="https://github.com/bunny-relay/bunny-relay/blob/main/docs/deploy.md"
# A fixed UID/GID, so Kubernetes' runAsNonRoot can verify it and volumes can match it.
# /var/lib/relay is relay's state directory (the SQLite idempotency store): it belongs to
# that user, so a volume mounted there (compose's named volume) starts out writable.
RUN groupadd --system --gid 10001 bunnyrelay \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin bunnyrelay \
    && install --directory --owner 10001 --group 10001 --mode 0750 /var/lib/relay
COPY --from=build /opt/bunnyrelay /opt/bunnyrelay
ENV PATH=/opt/bunnyrelay/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001

# ---- bunny: the client (AKS) --------------------------------------------------------
FROM runtime AS bunny
LABEL org.opencontainers.image.title="bunny"
ENTRYPOINT ["bunny"]
CMD ["--help"]

# ---- relay: the server (EKS); the last stage is the default target ----------------
FROM runtime AS relay
LABEL org.opencontainers.image.title="relay"
EXPOSE 50051
# For `docker run`; Kubernetes uses its native gRPC probes and compose its own check.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "bunnyrelay.healthcheck", "127.0.0.1:50051"]
ENTRYPOINT ["relay"]
CMD ["serve"]
