"""The production URLconf plus one bare JSON view: the API benchmark's baseline.

Loaded only through tinywindow.bench.settings (the bench's web server), never by production.
"""

from django.http import HttpRequest, JsonResponse
from django.urls import path

from tinywindow.urls import handler404  # noqa: F401 - handler404 re-exported
from tinywindow.urls import urlpatterns as production_urlpatterns


def bare_json(request: HttpRequest) -> JsonResponse:
    """What Django alone costs: the same middleware, no DRF, no database, a small JSON body."""
    return JsonResponse({"status": "ok", "mode": "PAPER", "open_orders": 0})


urlpatterns = [*production_urlpatterns, path("bench/bare", bare_json, name="bench-bare")]
