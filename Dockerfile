# syntax=docker/dockerfile:1
# The Lapse operator image: Lapse and its pinned dependencies installed into a venv in one
# stage, copied into a clean stage that has no pip, no compilers and runs as an unprivileged
# numeric user with a read-only root filesystem.
#
#   docker build -t ghcr.io/lapse-dev/lapse:0.1.0 --build-arg VERSION=0.1.0 .
#
# `make image` builds the same file with buildah, on a base made from Debian's packages where
# no registry is reachable (release/image.sh).

# Any Python 3.11 on Debian bookworm with `python3 -m venv`: the public slim image by default.
ARG BASE=docker.io/library/python:3.11.13-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Dependencies first, in a layer of their own: a change to Lapse's code rebuilds only the step
# after it. Wheels only (no compiler needed or present), at the versions the tests ran with.
# The kubernetes client's asyncio copy of the whole API (about 65 MB) goes: Lapse and kopf never
# import it, and the image's own test would fail at start-up if they did. Behind a
# TLS-intercepting proxy, pass its CA bundle as the secret `ca-certificates`: pip trusts it for
# these steps and it is never written into a layer.
COPY release/constraints.txt release/constraints.txt
RUN --mount=type=secret,id=ca-certificates \
    if [ -f /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && python3 -m venv /opt/lapse \
    && /opt/lapse/bin/pip install --only-binary=:all: --requirement release/constraints.txt \
    && rm -rf /opt/lapse/lib/python3*/site-packages/kubernetes/aio
COPY pyproject.toml README.md ./
COPY operator ./operator
# `pip check` fails the build when pyproject.toml asks for something the pins do not give
# (then: make constraints).
RUN --mount=type=secret,id=ca-certificates \
    if [ -f /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && /opt/lapse/bin/pip install --no-deps . \
    && /opt/lapse/bin/pip check \
    && /opt/lapse/bin/pip uninstall --yes pip setuptools

FROM ${BASE}
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="Lapse" \
      org.opencontainers.image.description="Temporary RBAC for Kubernetes: access that lapses on the second." \
      org.opencontainers.image.source="https://github.com/lapse-dev/lapse" \
      org.opencontainers.image.url="https://github.com/lapse-dev/lapse" \
      org.opencontainers.image.documentation="https://github.com/lapse-dev/lapse/blob/main/deploy/README.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# The base's own pip and the wheels ensurepip would install it from go too: nothing installs
# anything at run time. The user gets a name, for libraries that ask who they run as (getpass).
RUN (python3 -m pip uninstall --yes pip setuptools wheel >/dev/null 2>&1 || true) \
    && rm -rf /usr/local/bin/pip /usr/local/bin/pip3* /usr/share/python-wheels \
       /usr/lib/python3*/ensurepip /usr/local/lib/python3*/ensurepip \
    && echo 'lapse:x:65532:' >> /etc/group \
    && echo 'lapse:x:65532:65532:Lapse:/nonexistent:/usr/sbin/nologin' >> /etc/passwd
COPY --from=build /opt/lapse /opt/lapse
# Bytecode is compiled at build time, so a read-only root filesystem costs no start-up time.
ENV PATH=/opt/lapse/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LAPSE_LIVENESS_ENDPOINT=http://0.0.0.0:8080/healthz
# Numeric, so the kubelet can check `runAsNonRoot` without looking the name up.
USER 65532:65532
# Webhooks, metrics, liveness.
EXPOSE 9443 9090 8080
# The Deployment's probes, for runtimes that honour image health checks (docker, podman).
HEALTHCHECK --interval=20s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["lapse-operator"]
