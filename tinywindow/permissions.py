"""Who may do what (DESIGN.md "Security").

Roles are Django groups: `viewer` (read), `operator` (activate the kill switch, reset
breakers, pause agents), `admin` (deactivate the kill switch, change limits, enable live
trading). Superusers are admins. Two loopback exceptions, by design:
- activating the kill switch from loopback is always allowed (it only makes things safer);
- other writes from loopback without credentials only while ALLOW_LOOPBACK_WRITES is on
  (default: on in paper mode, off in live mode).
Loopback is judged from REMOTE_ADDR only, never from a forwarded header a client can forge.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLE_ORDER = (VIEWER, OPERATOR, ADMIN)


def client_address(request) -> str:
    return request.META.get("REMOTE_ADDR", "") or ""


def is_loopback(request) -> bool:
    """True when the client is on this host (or a network listed in LOCAL_NETWORKS, e.g. compose's)."""
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    return address.is_loopback or any(address in network for network in settings.LOCAL_NETWORKS)


def user_role(user) -> str | None:
    """The highest role of an authenticated user, or None."""
    if not user or not user.is_authenticated:
        return None
    if user.is_superuser:
        return ADMIN
    names = set(user.groups.values_list("name", flat=True))
    for role in reversed(ROLE_ORDER):
        if role in names:
            return role
    return None


def has_role(user, role: str) -> bool:
    held = user_role(user)
    return held is not None and ROLE_ORDER.index(held) >= ROLE_ORDER.index(role)


def actor_name(request) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user.get_username()
    return f"anonymous@{client_address(request) or 'unknown'}"


class RolePermission(BasePermission):
    """Reads need `viewer`; writes need the role the view declares in `write_roles`."""

    message = "You do not have the role this action needs."

    def required_role(self, request, view) -> str:
        if request.method in SAFE_METHODS:
            return VIEWER
        return getattr(view, "write_roles", {}).get(request.method, ADMIN)

    def has_permission(self, request, view) -> bool:
        role = self.required_role(request, view)
        if has_role(request.user, role):
            return True
        if request.method in SAFE_METHODS:
            return is_loopback(request) and settings.ALLOW_LOOPBACK_WRITES
        if request.method in getattr(view, "loopback_always_allowed", ()) and is_loopback(request):
            return True
        return is_loopback(request) and settings.ALLOW_LOOPBACK_WRITES and not request.user.is_authenticated


