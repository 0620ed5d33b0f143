"""Template context for the admin: the desk banner (tinywindow/templates/admin/base_site.html)."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from tinywindow.status import desk_banner


def desk_status(request: HttpRequest) -> dict[str, object]:
    # Lazy: computed only by a template that shows it (the admin's), never for API or health pages.
    return {"desk_status": SimpleLazyObject(desk_banner)}
