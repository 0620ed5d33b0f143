"""TinyWindow: autonomous trading with a safety system that can stop everything at once."""

from tinywindow.celery import app as celery_app

__all__ = ("celery_app",)
