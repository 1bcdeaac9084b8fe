# The app: uWSGI (the pyuwsgi wheel) serving the Flask app, its spooler and mules.
#
#   PYTHON_IMAGE  base image with python3 and its venv module; default the official slim image.
#                 `make offline-images` builds one from Debian packages (see .env.offline).
#   PIP_NO_INDEX  1: install only from docker/wheelhouse/, never from the network.
#                 Unset: the wheelhouse first, PyPI for whatever it lacks (an empty one works).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The dependencies in a virtual environment, from the same base as the final image, so that its
# interpreter path holds there too.
FROM ${PYTHON_IMAGE} AS builder
ARG PIP_NO_INDEX=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
COPY docker/wheelhouse/ /wheelhouse/
COPY requirements/runtime.txt /build/
# The runtime lock, each wheel checked against its hashes (the project itself runs from /app);
# then pip and setuptools leave: the final image holds only what runs.
RUN case "${PIP_NO_INDEX}" in 1|true|yes|on) index=--no-index ;; *) index= ;; esac \
    && /opt/venv/bin/pip install $index --find-links /wheelhouse --only-binary=:all: \
        --require-hashes --requirement /build/runtime.txt \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

FROM ${PYTHON_IMAGE}
# Fixed ids, so that volume ownership survives rebuilds (docker-compose.yml repeats them).
# The volumes' directories are private (0700), and the launcher's umask 077 keeps what is
# created in them so: nginx reads /media as this same user (docker-compose.yml).
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" app \
    && useradd --system --uid "${APP_UID}" --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /data /spool /run/app \
    && chown app:app /data /spool /run/app \
    && chmod 0700 /data /spool /run/app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SOCKET=0.0.0.0:3031 \
    STATS_HOST=0.0.0.0 \
    STATS_PORT=9191 \
    DATA_DIR=/data \
    SPOOL_DIR=/spool \
    RUN_DIR=/run/app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY uwsgi.ini pyproject.toml ./
COPY app/ app/
# Compiled now, as root: the app user cannot write them, and every health check imports the app.
RUN python -m compileall -q app
USER app
# 3031: the uwsgi protocol, for nginx only (never publish it); 9191: the stats server.
EXPOSE 3031 9191
# uwsgi.ini makes SIGTERM a graceful stop: requests in flight finish, within stop_grace_period.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "app.serve", "healthcheck"]
# The launcher validates the settings, then execs uWSGI: its master is PID 1.
CMD ["python", "-m", "app.serve", "uwsgi"]
