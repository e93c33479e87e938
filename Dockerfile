# mysqlgate container image: a wheel built in one stage, installed into a clean slim image.
#
#   docker build -t mysqlgate .
#   docker run --rm -p 127.0.0.1:6033:6033 \
#       -e MYSQLGATE_UPSTREAM=mysql://app@db.example.com:3306/app \
#       -e MYSQLGATE_UPSTREAM_PASSWORD=... mysqlgate
#   docker inspect --format '{{.State.Health.Status}}' <container>   # healthy / unhealthy
#   docker exec <container> mysqlgate status                           # pools, clients, stats
#
# Arguments after the image name go to mysqlgate (e.g. `mysqlgate --config /etc/...`).
#
# No "# syntax=" line on purpose: it makes BuildKit fetch a frontend image from Docker Hub
# before the first step, which fails where no registry is reachable. The built-in frontend
# of Docker >= 20.10 handles everything here (RUN --mount). Without Docker Hub, pass a
# local base image: --build-arg PYTHON_IMAGE=local/python-venv:3.11-bookworm
# (../shared/container/README.md; tests/integration/test_image.py builds and tests it).

# Pin a digest (python:3.11-slim@sha256:...) for byte-for-byte reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the project and its dependencies as wheels ----------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore), so edits to tests or docs
# elsewhere do not invalidate this layer.
# A C compiler for mysqlgate's one compiled part (mysqlgate/protocol/_scan.c: stepping
# over the rows of large results), and Python's headers where the base image lacks them
# (python:3.11-slim has them; Debian's python3 needs python3-dev). Only this stage gets
# them: the runtime image installs the built wheel.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && { python -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
         || apt-get install -y --no-install-recommends python3-dev; } \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md ./
COPY mysqlgate ./mysqlgate
# Dependencies (PyMySQL, cryptography, uvloop) ship manylinux wheels for 3.11;
# --wheel-dir collects them for an offline install below. The extension is optional to
# pip (a machine without a compiler still installs mysqlgate), not to this image: a
# wheel without it (py3-none-any) fails the build.
RUN pip wheel --wheel-dir /wheels . \
    && if ls /wheels/mysqlgate-*-none-any.whl >/dev/null 2>&1; then \
         echo "mysqlgate was built without its C extension" >&2; exit 1; fi

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
#
# Metrics and health: GET /metrics (Prometheus) and GET /healthz (200 "ok", or 503 with the
# reason, e.g. the upstream is unreachable) on metrics.listen, on all interfaces as well.
# The admin console (admin.listen) stays on its default 127.0.0.1:6032: without
# admin.password only the same OS user on loopback may log in, which is what
# `docker exec <container> mysqlgate status` is (same uid 10001, same network namespace).
ENV MYSQLGATE_LISTEN=0.0.0.0:6033 \
    MYSQLGATE_LISTEN_ALLOW_REMOTE=1 \
    MYSQLGATE_METRICS_LISTEN=0.0.0.0:9033 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 6033 9033

# `mysqlgate health` asks /healthz at metrics.listen, read from the same configuration
# as the daemon's (environment, flags, --config file); it prints the answer (`docker
# inspect` shows it in .State.Health.Log) and exits 1 unless it is 200.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["mysqlgate", "health"]

# Exec form: mysqlgate is PID 1 and receives SIGTERM (drain) and SIGHUP (reload) itself.
# Give `docker stop` a grace period over the 30 s drain deadline: docker stop -t 35.
ENTRYPOINT ["mysqlgate"]
