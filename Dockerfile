# syntax=docker/dockerfile:1
# The Lapse operator image: a wheel built in one stage, installed into a clean slim stage that
# has no compilers and runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Lapse and every dependency as wheels: the final stage installs offline from these alone.
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The wheels are mounted, not copied, so they add nothing to the image's layers.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels lapse \
    && groupadd --system --gid 65532 lapse \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin lapse
USER 65532:65532
# Webhooks, metrics, liveness.
EXPOSE 9443 9090 8080
ENTRYPOINT ["lapse-operator"]
