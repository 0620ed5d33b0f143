import shlex

from django.conf import settings
from django.core.management.base import BaseCommand

from tinywindow.embedded import tool_bin_dirs


class Command(BaseCommand):
    help = (
        "Print shell lines for the runbook's commands: the bundled psql, pg_isready, pg_dump and redis-cli on "
        "PATH; PGHOST, PGPORT, PGUSER and PGDATABASE of the running system's database, so `psql` opens it "
        "(no password is printed: use `python manage.py dbshell` where one is needed); and PAPER_TRADING_MODE "
        "as the system runs it (`echo $PAPER_TRADING_MODE`). "
        'Use: eval "$(python manage.py shellenv)"'
    )

    def handle(self, *args, **options):
        dirs = ":".join(str(d) for d in tool_bin_dirs())
        self.stdout.write(f'export PATH="{dirs}:$PATH"')
        db = settings.DATABASES["default"]
        for name, value in (("PGHOST", db.get("HOST") or "127.0.0.1"), ("PGPORT", db.get("PORT") or 5432),
                            ("PGUSER", db.get("USER")), ("PGDATABASE", db.get("NAME"))):
            if value:
                self.stdout.write(f"export {name}={shlex.quote(str(value))}")
        # The effective mode (environment, .env, or the default), not only what this shell happens to hold.
        self.stdout.write(f"export PAPER_TRADING_MODE={'true' if settings.PAPER_TRADING_MODE else 'false'}")
