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

import functools
import ipaddress

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
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
    names = getattr(user, GROUP_NAMES_ATTR, None)  # read with the token (TokenAuthentication)
    if names is None:
        names = set(user.groups.values_list("name", flat=True))
    for role in reversed(ROLE_ORDER):
        if role in names:
            return role
    return None


# Where TokenAuthentication leaves the user's group names, read in the same query as the token.
GROUP_NAMES_ATTR = "_tinywindow_group_names"


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication (`Authorization: Token <key>`), with the user and the user's
    group names read in the same query as the token: the role check then needs no query of its
    own, so an authenticated request costs one database round trip for auth, not two, and no ORM
    compile (issue 10). The row is kept per process until an account changes
    (tinywindow.auth_cache), so most requests cost none. Same answers as DRF's: 401 for an
    unknown key or an inactive user."""

    def authenticate_credentials(self, key: str):
        from django.db import connection

        from tinywindow.auth_cache import TOKEN_ROWS
        from tinywindow.metrics import API_TOKEN_CACHE

        model = self.get_model()
        row = TOKEN_ROWS.get(key)
        API_TOKEN_CACHE.labels("miss" if row is None else "hit").inc()
        if row is None:
            epoch = TOKEN_ROWS.epoch()
            with connection.cursor() as cursor:
                cursor.execute(_token_sql(model), [key])
                row = cursor.fetchone()
            if row is None:
                raise exceptions.AuthenticationFailed(_("Invalid token."))
            TOKEN_ROWS.put(key, row, epoch)
        user_model = model._meta.get_field("user").related_model
        token_width = len(model._meta.concrete_fields)
        token = model.from_db(connection.alias, None, row[:token_width])
        user = user_model.from_db(connection.alias, None, row[token_width:-1])
        token.user = user
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        setattr(user, GROUP_NAMES_ATTR, set(row[-1]))
        return (user, token)


@functools.cache
def _token_sql(model) -> str:
    """The token's columns, its user's (both in model field order, as Model.from_db reads them)
    and the user's group names, for one key. Names come from the models' meta."""
    user_field = model._meta.get_field("user")
    user_model = user_field.related_model
    groups = user_model._meta.get_field("groups")
    through = groups.remote_field.through._meta
    group_model = groups.related_model._meta
    to_user = through.get_field(groups.m2m_field_name()).column
    to_group = through.get_field(groups.m2m_reverse_field_name()).column
    token_columns = ", ".join(f't."{f.column}"' for f in model._meta.concrete_fields)
    user_columns = ", ".join(f'u."{f.column}"' for f in user_model._meta.concrete_fields)
    return (
        f'SELECT {token_columns}, {user_columns}, '  # noqa: S608 - names from the models' meta; the key is a parameter
        f'ARRAY(SELECT g."name" FROM "{group_model.db_table}" g JOIN "{through.db_table}" ug '
        f'ON ug."{to_group}" = g."{group_model.pk.column}" WHERE ug."{to_user}" = u."{user_model._meta.pk.column}") '
        f'FROM "{model._meta.db_table}" t JOIN "{user_model._meta.db_table}" u '
        f'ON u."{user_model._meta.pk.column}" = t."{user_field.column}" '
        f'WHERE t."{model._meta.pk.column}" = %s'
    )


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


