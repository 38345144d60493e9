# syntax=docker/dockerfile:1.7
# The gatematch service image: slim, non-root (uid 10001), made to run with a read-only root filesystem.
#
# Models come from a local folder at build time and are sha256-verified against their cards
# (`gatematch models fetch --from DIR`); nothing is downloaded at run time:
#   docker build --build-context models=../shared/models -t gatematch:0.1.0 .
# Or without models, for a cluster that mounts them as a volume and verifies them at start
# (deploy/kubernetes/overlays/models-volume):
#   docker build --target runtime-no-models -t gatematch:0.1.0-no-models .
# Build argument PACK: the model pack to install (default: default). Pin the base image by digest in production
# (python:3.11-slim-bookworm@sha256:...); the tag here is the readable part of that pin.
#
# Writable paths the container needs (volumes under a read-only root): /tmp, and /var/lib/gatematch
# (galleries and audit log by default; the Kubernetes manifests mount an emptyDir there).
#
# checkov:skip=CKV_DOCKER_2:Kubernetes ignores HEALTHCHECK; pods use native gRPC probes on grpc.health.v1.

# ----------------------------------------------------------------------------------------------------- base
FROM python:3.11-slim-bookworm AS base

# ---------------------------------------------------------------------------------------------------- build
FROM base AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# A C compiler and libjpeg-turbo's headers build the region decoder of camera frames (src/gatematch/_jpegregion.c);
# the runtime stage needs only the library. Not pinned to versions: Debian's security updates replace them in
# the archive; the base image's digest (above) fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libjpeg62-turbo-dev \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# A non-editable install: the runtime stage gets the venv only, never the source tree.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /src \
    && /opt/venv/bin/python -c "import gatematch._jpegregion" \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --------------------------------------------------------------------------------------------------- models
# Empty unless the build names a model folder: `--build-context models=DIR` replaces this stage.
FROM scratch AS models

FROM build AS verified-models
ARG PACK=default
COPY --from=models / /models-src/
# Fails the build when a file is missing or its sha256 differs from the card.
RUN /opt/venv/bin/gatematch models fetch --from /models-src --pack "${PACK}" --model-dir /opt/gatematch/models

# -------------------------------------------------------------------------------------------------- runtime
FROM base AS runtime-no-models
LABEL org.opencontainers.image.title="gatematch" \
      org.opencontainers.image.description="Biometric entry/exit face matching service (gRPC)" \
      org.opencontainers.image.licenses="Apache-2.0"
# XDG_DATA_HOME only moves the defaults (galleries, audit log) to /var/lib/gatematch; config still wins.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_DATA_HOME=/var/lib \
    GATEMATCH_MODEL_DIR=/opt/gatematch/models
# libjpeg-turbo for the region decoder built in the build stage (see there for why the version is not pinned)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjpeg62-turbo \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 gatematch \
    && useradd --system --uid 10001 --gid gatematch --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin gatematch \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/gatematch
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/gatematch
EXPOSE 50051 9090
ENTRYPOINT ["gatematch"]
CMD ["serve"]

# The default target: the runtime with the verified models (root-owned, read-only to the service).
FROM runtime-no-models AS runtime
COPY --from=verified-models /opt/gatematch/models /opt/gatematch/models
