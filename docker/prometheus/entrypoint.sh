#!/bin/sh
# Prometheus of the `monitoring` profile, for Debian's package (offline image) and the official
# image alike: the operator token from the environment goes to the file prometheus.yml names.
set -eu
umask 077
printf '%s' "${OPERATOR_TOKEN:?the monitoring profile needs OPERATOR_TOKEN to scrape /metrics}" >/tmp/operator-token
exec prometheus --config.file=/etc/prometheus/app/prometheus.yml --storage.tsdb.path=/prometheus \
    --storage.tsdb.retention.time="${PROMETHEUS_RETENTION:-15d}" --web.listen-address=:9090 "$@"
