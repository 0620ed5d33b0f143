from django.apps import AppConfig


class TinyWindowConfig(AppConfig):
    name = "tinywindow"
    verbose_name = "TinyWindow"
