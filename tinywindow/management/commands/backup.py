"""`python manage.py backup`: a pg_dump of the configured database (beat runs it every BACKUP_SECONDS)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from tinywindow.backup import backup_create
from tinywindow.cli import cli_errors, count


class Command(BaseCommand):
    help = ("Write a backup of the database (pg_dump, custom format) to --dir and delete all but the newest "
            "--keep backups. Restore one with `python manage.py restore FILE`. Beat runs this every "
            "BACKUP_SECONDS (default 900: the runbook's RPO of 15 minutes). Exit codes: 0 written, 2 bad "
            "option, 1 database or disk failure.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dir", type=Path, default=None,
                            help=f"Directory for the backups (default BACKUP_DIR: {settings.BACKUP_DIR}).")
        parser.add_argument("--keep", type=count(1, 100_000), default=None,
                            help="How many backups to keep, newest first "
                            f"(default BACKUP_KEEP: {settings.BACKUP_KEEP}).")

    def handle(self, *args, **options) -> None:
        with cli_errors():
            result = backup_create(directory=options["dir"], keep=options["keep"], progress=self.stdout.write)
        self.stdout.write(self.style.SUCCESS(
            f"backup written: {result.path} ({result.size_bytes / 1024:.1f} KiB in {result.seconds:.1f} s); "
            f"{len(result.removed)} old backup(s) removed"))
