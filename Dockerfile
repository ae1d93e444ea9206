# syntax=docker/dockerfile:1
# The one image of the mwa-staging operator (`mwa-staging-operator`), the HTTP gateway
# (`mwa-staging-gateway`) and the Kafka
# bridge (`mwa-kafka-bridge`); the kind end-to-end run also starts the simulators
# from it (`python -m devstack.sim.<name>`). Build: make image.
#
# Two stages: the builder makes a wheel of this project and installs it with its
# pinned dependencies into /opt/venv; the final stage copies only that venv onto a
# slim base: no compiler, no pip cache, no source tree.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY mwa_staging ./mwa_staging
COPY operator ./operator
COPY kafka_bridge ./kafka_bridge
COPY mwa_staging_gateway ./mwa_staging_gateway
COPY devstack ./devstack
# pip builds the wheel in an isolated environment (setuptools from pyproject.toml's
# build-system), then installs it and its pinned dependencies (binary wheels: no
# compiler needed) into the venv, which is precompiled because the final image's
# root filesystem is read-only at run time.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/*.whl \
    && /opt/venv/bin/python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mwa-staging" \
      org.opencontainers.image.description="MWA staging operator, Kafka bridge and HTTP gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed non-root uid/gid: the chart's securityContext uses the same (image.uid).
RUN groupadd --system --gid 10001 mwa \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mwa
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8081 8082
# The chart sets the command (mwa-staging-operator, mwa-kafka-bridge or mwa-staging-gateway).
CMD ["mwa-staging-operator"]
