from django.core.management.base import BaseCommand

from tinywindow.embedded import tool_bin_dirs


class Command(BaseCommand):
    help = (
        "Print the shell line that puts the bundled psql, pg_isready, pg_dump and redis-cli on PATH. "
        'Use: eval "$(python manage.py shellenv)"'
    )

    def handle(self, *args, **options):
        dirs = ":".join(str(d) for d in tool_bin_dirs())
        self.stdout.write(f'export PATH="{dirs}:$PATH"')
