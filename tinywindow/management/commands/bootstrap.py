from django.core.management.base import BaseCommand

from tinywindow.bootstrap import bootstrap


class Command(BaseCommand):
    help = "Create roles, the admin user, safety state and beat schedules (idempotent); optionally demo agents."

    def add_arguments(self, parser):
        parser.add_argument("--demo-agents", action="store_true", help="Seed three paper demo agents if none exist.")

    def handle(self, *args, demo_agents: bool = False, **options):
        report = bootstrap(demo_agents=demo_agents)
        if report.admin_password_generated:
            self.stdout.write(
                f"admin user created: {report.admin_username} / {report.admin_password_generated} "
                "(shown once; set ADMIN_PASSWORD to choose it, or `python manage.py changepassword admin`)"
            )
        for name in report.demo_agents_created:
            self.stdout.write(f"demo agent created: {name}")
        self.stdout.write("bootstrap complete")
