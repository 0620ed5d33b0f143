#!/usr/bin/env bash
# strategy: agent ticks (`strategy`) and housekeeping (`default`); run as many as you like
# (`docker compose up --scale strategy=N`). STRATEGY_HEALTH_PORT, when set, serves /health
# and /metrics like the engine does (compose sets it so Prometheus sees tick metrics).
set -o errexit -o nounset -o pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tw_prepare

tw_exec celery -A tinywindow worker -Q strategy,default -n strategy@%h \
    ${STRATEGY_HEALTH_PORT:+--health-port "$STRATEGY_HEALTH_PORT" --health-host "${STRATEGY_HEALTH_HOST:-127.0.0.1}"} \
    --loglevel "${LOG_LEVEL:-INFO}" "$@"
