from django.apps import AppConfig


class TinyWindowConfig(AppConfig):
    name = "tinywindow"
    verbose_name = "TinyWindow"

    def ready(self) -> None:
        from tinywindow.auth_cache import connect_signals

        connect_signals()
