#!/usr/bin/env bash
# beat: the one scheduler (schedules live in the database: django-celery-beat). Never run two.
# CELERY_BEAT_PIDFILE, when set, is written once beat runs (compose's healthcheck reads it).
set -o errexit -o nounset -o pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tw_prepare

tw_exec celery -A tinywindow beat --scheduler django_celery_beat.schedulers:DatabaseScheduler \
    ${CELERY_BEAT_PIDFILE:+--pidfile "$CELERY_BEAT_PIDFILE"} \
    --loglevel "${LOG_LEVEL:-INFO}" "$@"
