# shellcheck shell=bash
# Sourced (never executed) by entrypoint.sh and the start-*.sh role scripts.
#
# The same scripts run in the image and on a dev machine, so every path below is only a
# default that the environment overrides:
#   TINYWINDOW_APP_DIR        project root (default: the parent of this docker/ directory)
#   PYTHON                    interpreter with the requirements installed (default: the active
#                             virtualenv, else the first `python`/`python3` on PATH that can
#                             import django, else ./.venv or ./venv under the project root)
#   PROMETHEUS_MULTIPROC_DIR  emptied at start when set (prometheus_client multiprocess mode)
#   DB_WAIT_TIMEOUT           seconds to wait for PostgreSQL at start (default 60; 0 = don't wait)

unset CDPATH  # `cd` must not print: its output is captured below
TW_DOCKER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TINYWINDOW_APP_DIR="${TINYWINDOW_APP_DIR:-$(dirname "$TW_DOCKER_DIR")}"
export TINYWINDOW_APP_DIR

tw_log() {
    printf 'tinywindow %s: %s\n' "${0##*/}" "$*" >&2
}

tw_find_python() {
    local candidate
    for candidate in \
        "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" \
        "$(command -v python 2>/dev/null || true)" \
        "$(command -v python3 2>/dev/null || true)" \
        "$TINYWINDOW_APP_DIR/.venv/bin/python" \
        "$TINYWINDOW_APP_DIR/venv/bin/python"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import django' >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    command -v python3 2>/dev/null || echo python
}

if [ -z "${PYTHON:-}" ]; then
    PYTHON="$(tw_find_python)"
fi
export PYTHON

# tw_exec TOOL ARGS...: replace this shell with TOOL (celery, gunicorn) from PATH, else with
# `$PYTHON -m TOOL`, so a dev machine without the virtualenv's bin/ on PATH works too.
tw_exec() {
    local tool="$1"
    shift
    if command -v "$tool" >/dev/null 2>&1; then
        exec "$tool" "$@"
    fi
    exec "$PYTHON" -m "$tool" "$@"
}

# Empty PROMETHEUS_MULTIPROC_DIR: prometheus_client requires a clean directory before the
# processes that share it start, or samples of dead processes from an earlier run are summed in.
tw_reset_metrics_dir() {
    local dir="${PROMETHEUS_MULTIPROC_DIR:-}"
    [ -n "$dir" ] || return 0
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd -P)"
    export PROMETHEUS_MULTIPROC_DIR="$dir"
    case "$dir" in
        / | /tmp | /var/tmp | "$(cd "${HOME:-/}" 2>/dev/null && pwd -P)" | "$(cd "$TINYWINDOW_APP_DIR" && pwd -P)")
            # A shared directory by mistake: remove only prometheus_client's own files.
            tw_log "PROMETHEUS_MULTIPROC_DIR=$dir is a shared directory; removing only prometheus_client's files"
            find "$dir" -mindepth 1 -maxdepth 1 -type f \( -name 'counter_*.db' -o -name 'gauge_*.db' \
                -o -name 'histogram_*.db' -o -name 'summary_*.db' \) -delete
            ;;
        *)
            find "$dir" -mindepth 1 -delete
            ;;
    esac
}

# Wait (bounded) until PostgreSQL accepts connections, at the address the settings will use:
# DATABASE_URL, else the one `manage.py up` recorded, else the default (tinywindow.runtime).
tw_wait_for_postgres() {
    local timeout="${DB_WAIT_TIMEOUT:-60}"
    [ "$timeout" != 0 ] || return 0
    DB_WAIT_TIMEOUT="$timeout" "$PYTHON" - <<'PY'
import os, sys, time
from urllib.parse import urlsplit

import psycopg

try:
    from tinywindow.runtime import resolve_database_url
    url = resolve_database_url()
except ImportError:
    url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/tinywindow"
parts = urlsplit(url)
where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"  # never the password
deadline = time.monotonic() + float(os.environ["DB_WAIT_TIMEOUT"])
attempt = 0
while True:
    attempt += 1
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        if time.monotonic() >= deadline:
            print(f"tinywindow: PostgreSQL at {where} still unavailable after {attempt} attempts: {exc}".rstrip(), file=sys.stderr)
            sys.exit(1)
        if attempt == 1:
            print(f"tinywindow: waiting for PostgreSQL at {where} ...", file=sys.stderr)
        time.sleep(1)
    else:
        if attempt > 1:
            print(f"tinywindow: PostgreSQL at {where} is up", file=sys.stderr)
        break
PY
}

# Run once per start, whichever script comes first (entrypoint.sh in the image, the role script
# when it is run directly): go to the project root, empty the metrics dir, wait for PostgreSQL.
tw_prepare() {
    cd "$TINYWINDOW_APP_DIR" || return 1
    if [ "${TINYWINDOW_PREPARED:-}" = 1 ]; then
        return 0
    fi
    tw_reset_metrics_dir
    tw_wait_for_postgres
    export TINYWINDOW_PREPARED=1
}
