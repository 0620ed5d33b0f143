#!/usr/bin/env bash
# Image entrypoint: empty PROMETHEUS_MULTIPROC_DIR, wait for PostgreSQL, then run the role
# script given as the command (default: start-web.sh). See common.sh for the variables.
set -o errexit -o nounset -o pipefail

# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tw_prepare
if [ "$#" -eq 0 ]; then
    set -- "$TW_DOCKER_DIR/start-web.sh"
fi
exec "$@"
