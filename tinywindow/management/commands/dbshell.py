"""`dbshell` that works on a fresh machine: prefers the psql bundled with the embedded server."""

import os

from django.core.management.commands.dbshell import Command as DjangoDbShell

from tinywindow.embedded import tool_bin_dirs


class Command(DjangoDbShell):
    def handle(self, **options):
        os.environ["PATH"] = os.pathsep.join([*(str(d) for d in tool_bin_dirs()), os.environ.get("PATH", "")])
        return super().handle(**options)
