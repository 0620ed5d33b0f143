from django.urls import path, re_path

from safety.api.views import KillSwitchEventList, KillSwitchView

urlpatterns = [
    # The runbook's curls use no trailing slash; accept both.
    re_path(r"^kill-switch/?$", KillSwitchView.as_view(), name="kill-switch"),
    path("kill-switch/events/", KillSwitchEventList.as_view(), name="kill-switch-events"),
]
