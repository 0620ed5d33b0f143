#!/usr/bin/env bash
# engine: the `safety` and `execution` queues, plus /health and /metrics on :8080
# (ENGINE_HEALTH_HOST=0.0.0.0 inside a container; loopback by default elsewhere).
set -o errexit -o nounset -o pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tw_prepare

tw_exec celery -A tinywindow worker -Q safety,execution -n engine@%h \
    --health-port "${ENGINE_HEALTH_PORT:-8080}" --health-host "${ENGINE_HEALTH_HOST:-127.0.0.1}" \
    --loglevel "${LOG_LEVEL:-INFO}" "$@"
