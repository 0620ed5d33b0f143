#!/usr/bin/env bash
# flower: Celery monitoring on :5555. Basic auth when FLOWER_BASIC_AUTH=user:pass is set;
# Flower reads that variable itself, which keeps the password out of the process list.
set -o errexit -o nounset -o pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tw_prepare

# An empty FLOWER_BASIC_AUTH would make Flower demand a login nobody can give: drop it.
if [ -z "${FLOWER_BASIC_AUTH:-}" ]; then
    unset FLOWER_BASIC_AUTH
fi
tw_exec celery -A tinywindow flower --port="${FLOWER_PORT:-5555}" "$@"
