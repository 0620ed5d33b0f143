from django.urls import path, re_path

from safety.api import views

urlpatterns = [
    # The runbook's curls use no trailing slash; accept both.
    re_path(r"^kill-switch/?$", views.KillSwitchView.as_view(), name="kill-switch"),
    path("kill-switch/events/", views.KillSwitchEventList.as_view(), name="kill-switch-events"),
    path("circuit-breakers/", views.CircuitBreakerList.as_view(), name="circuit-breakers"),
    re_path(r"^circuit-breakers/reset/?$", views.CircuitBreakerReset.as_view(), name="circuit-breakers-reset"),
    path("circuit-breakers/events/", views.CircuitBreakerEventList.as_view(), name="circuit-breaker-events"),
    path("risk-limits/", views.RiskLimitList.as_view(), name="risk-limits"),
    path("audit/", views.AuditEventList.as_view(), name="audit"),
]
