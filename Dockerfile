# syntax=docker/dockerfile:1
# mysqlgate container image: a wheel built in one stage, installed into a clean slim image.
#
#   docker build -t mysqlgate .
#   docker run --rm -p 127.0.0.1:6033:6033 \
#       -e MYSQLGATE_UPSTREAM=mysql://app@db.example.com:3306/app \
#       -e MYSQLGATE_UPSTREAM_PASSWORD=... mysqlgate
#
# Arguments after the image name go to mysqlgate (e.g. `mysqlgate --config /etc/...`).

# Pin a digest (python:3.11-slim@sha256:...) for byte-for-byte reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the project and its dependencies as wheels ----------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore), so edits to tests or docs
# elsewhere do not invalidate this layer.
COPY pyproject.toml README.md ./
COPY mysqlgate ./mysqlgate
# Dependencies (PyMySQL, cryptography, uvloop) ship manylinux wheels for 3.11, so this
# stage needs no compiler; --wheel-dir collects them for an offline install below.
RUN pip wheel --wheel-dir /wheels .

# --- runtime ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mysqlgate" \
      org.opencontainers.image.description="Connection-pooling proxy for MySQL and MariaDB" \
      org.opencontainers.image.licenses="MIT"

# Bind-mount the wheels instead of COPYing them, so they take no layer in the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels mysqlgate

# A fixed numeric id, so orchestrators can verify runAsNonRoot without /etc/passwd.
RUN groupadd --system --gid 10001 mysqlgate \
    && useradd --system --uid 10001 --gid mysqlgate --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin mysqlgate
USER 10001:10001

# Inside a container, loopback is the container's own: clients come in through the
# container's interface, so listen on all of them. mysqlgate refuses a non-loopback
# listener unless told it is intended (listen.allow_remote). A sidecar sharing the app's
# network namespace sets MYSQLGATE_LISTEN=127.0.0.1:6033 instead
# (deploy/docker-compose.sidecar.yml).
ENV MYSQLGATE_LISTEN=0.0.0.0:6033 \
    MYSQLGATE_LISTEN_ALLOW_REMOTE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 6033

# Exec form: mysqlgate is PID 1 and receives SIGTERM (drain) and SIGHUP (reload) itself.
# Give `docker stop` a grace period over the 30 s drain deadline: docker stop -t 35.
ENTRYPOINT ["mysqlgate"]
