#!/usr/bin/env bash
# web: migrate, collect static files and bootstrap (admin, demo agents, beat schedules; all
# idempotent), then serve Django with gunicorn. WEB_SETUP=0 skips the three setup steps.
set -o errexit -o nounset -o pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tw_prepare

if [ "${WEB_SETUP:-1}" != 0 ]; then
    "$PYTHON" manage.py migrate --noinput
    "$PYTHON" manage.py collectstatic --noinput
    "$PYTHON" manage.py bootstrap
fi
# gunicorn_conf: gunicorn's logs in LOG_FORMAT, and dead workers' metrics files marked.
tw_exec gunicorn tinywindow.wsgi:application --config python:tinywindow.gunicorn_conf \
    --bind "${WEB_BIND:-0.0.0.0:8000}" --workers "${WEB_WORKERS:-3}" "$@"
