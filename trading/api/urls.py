from django.urls import path, re_path

from trading.api import views
from trading.models import AgentStatus

urlpatterns = [
    re_path(r"^status/?$", views.SystemStatusView.as_view(), name="status"),
    path("agents/", views.AgentListCreate.as_view(), name="agents"),
    path("agents/<int:pk>/", views.AgentDetail.as_view(), name="agent"),
    re_path(r"^agents/(?P<pk>[0-9]+)/pause/?$", views.AgentStatusChange.as_view(target=AgentStatus.PAUSED),
            name="agent-pause"),
    re_path(r"^agents/(?P<pk>[0-9]+)/resume/?$", views.AgentStatusChange.as_view(target=AgentStatus.ACTIVE),
            name="agent-resume"),
    re_path(r"^agents/(?P<pk>[0-9]+)/stop/?$", views.AgentStatusChange.as_view(target=AgentStatus.STOPPED),
            name="agent-stop"),
    path("orders/", views.OrderList.as_view(), name="orders"),
    path("orders/<int:pk>/", views.OrderDetail.as_view(), name="order"),
    path("fills/", views.FillList.as_view(), name="fills"),
    path("positions/", views.PositionList.as_view(), name="positions"),
    path("portfolio-snapshots/", views.PortfolioSnapshotList.as_view(), name="portfolio-snapshots"),
    path("portfolio-snapshots/latest/", views.PortfolioSnapshotLatest.as_view(), name="portfolio-snapshot-latest"),
    path("portfolio-snapshots/<int:pk>/", views.PortfolioSnapshotDetail.as_view(), name="portfolio-snapshot"),
    path("agent-performance/", views.AgentPerformanceList.as_view(), name="agent-performance"),
]
