#!/usr/bin/env python
"""Django's command-line utility for TinyWindow (`python manage.py up`, `migrate`, ...)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tinywindow.settings")
    from django.core.exceptions import ImproperlyConfigured

    try:
        from django.conf import settings

        settings.INSTALLED_APPS  # noqa: B018 - import the settings now, to report bad env values cleanly
    except ImproperlyConfigured as exc:
        # A malformed environment value is an operator mistake, not a crash:
        # one line that says what to fix, and a non-zero exit.
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
