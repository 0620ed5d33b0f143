"""`python manage.py shell` with the runbook's names already imported.

The runbook's manual reset is two lines, `from tinywindow.safety import CircuitBreaker` then
`circuit_breaker.reset(reason=...)`: the second uses the module's `circuit_breaker` object,
which the first line does not import. Django's shell imports the models of every app on
start (5.2); this adds the safety façade's objects, so the runbook's lines run verbatim.
"""

from django.core.management.commands.shell import Command as DjangoShellCommand

RUNBOOK_NAMES = ["tinywindow.safety.CircuitBreaker", "tinywindow.safety.circuit_breaker"]


class Command(DjangoShellCommand):
    def get_auto_imports(self) -> list[str]:
        return [*super().get_auto_imports(), *RUNBOOK_NAMES]
