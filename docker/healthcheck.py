#!/usr/bin/env python3
"""Container healthcheck without curl: exit 0 when the check passes, 1 otherwise.

    healthcheck.py [URL]          GET URL (default: $HEALTHCHECK_URL, else the web /health);
                                  healthy only on HTTP 200.
    healthcheck.py --pidfile PATH healthy while the process whose pid PATH holds is alive
                                  (for processes without an HTTP port, e.g. celery beat).

Standard library only, so it starts fast and never imports Django. The timeout in seconds
comes from $HEALTHCHECK_TIMEOUT (default 5).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/health"


def check_url(url: str, timeout: float) -> str | None:
    """None when GET url answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (URL is ours)
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"
    return None if status == 200 else f"{url}: HTTP {status}"


def check_pidfile(path: str) -> str | None:
    """None when the pid in path names a live process, else why not."""
    try:
        with open(path) as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
    except FileNotFoundError:
        return f"{path}: no pidfile (not started yet?)"
    except ValueError:
        return f"{path}: no pid in the pidfile"
    except ProcessLookupError:
        return f"{path}: process is gone"
    except PermissionError:
        return None  # it exists, it just is not ours to signal
    except OSError as exc:
        return f"{path}: {exc}"
    return None


def main(argv: list[str]) -> int:
    timeout = float(os.environ.get("HEALTHCHECK_TIMEOUT", "5"))
    if argv[:1] == ["--pidfile"]:
        if len(argv) != 2:
            print("usage: healthcheck.py --pidfile PATH", file=sys.stderr)
            return 2
        problem = check_pidfile(argv[1])
    elif len(argv) <= 1:
        problem = check_url(argv[0] if argv else os.environ.get("HEALTHCHECK_URL") or DEFAULT_URL, timeout)
    else:
        print("usage: healthcheck.py [URL] | --pidfile PATH", file=sys.stderr)
        return 2
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
