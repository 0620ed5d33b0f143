"""`python manage.py restore FILE`: load a backup made by `manage.py backup`."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from tinywindow.backup import backup_restore
from tinywindow.cli import cli_errors


class Command(BaseCommand):
    help = ("Restore a backup made by `python manage.py backup` into the configured database (DATABASE_URL), "
            "then rewrite the Redis safety mirror from it: the kill switch and breakers come back as they were. "
            "Refuses a database that already has tables unless --force (which drops them first). Start the "
            "workers afterwards; docs/reliability.md has the whole procedure. Exit codes: 0 restored, 2 bad file "
            "or non-empty database (nothing changed), 1 database failure.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="A .dump file written by `manage.py backup`.")
        parser.add_argument("--force", action="store_true",
                            help="Replace everything in a non-empty database (drops its public schema first).")

    def handle(self, *args, **options) -> None:
        with cli_errors():
            result = backup_restore(path=options["file"], force=options["force"], progress=self.stdout.write)
        mirror = "rewritten" if result.mirror_synced else "NOT rewritten (Redis down)"
        self.stdout.write(self.style.SUCCESS(f"restored {result.path}: {result.tables} tables in "
                                             f"{result.seconds:.1f} s; safety mirror {mirror}"))
