"""Users of each role (DESIGN.md "Security"), as the desk would have them: Django groups, staff
status for the admin. Built with bootstrap's groups."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from tinywindow.bootstrap import bootstrap

ROLES = ("viewer", "operator", "admin")
PASSWORD = "pw-123456789"
REMOTE = "203.0.113.7"  # TEST-NET-3: never loopback, so no loopback exception applies


def make_role_users() -> dict[str, object]:
    """bootstrap() (groups, breakers, limits) and one staff user per role: `viewer-user`, ..."""
    bootstrap(demo_agents=False)
    users = {}
    for role in ROLES:
        user = get_user_model().objects.create_user(f"{role}-user", password=PASSWORD, is_staff=True)
        user.groups.add(Group.objects.get(name=role))
        users[role] = user
    return users


def open_stale_data_breaker(symbol: str = "BTC/USDT") -> str:
    """Trip the stale-data breaker of `symbol` through the real check; returns its name."""
    from safety.services import stats
    from safety.services.breakers import breakers_check

    stats.market_data_seen(symbol=symbol, candle_close_ts=0)
    breakers_check(kinds=["stale_data"])
    return f"stale_data:{symbol}"


def make_book(feed) -> dict[str, object]:
    """A small trading history through the real services, on a FixedPriceFeed: two agents, a BTC
    round trip (executed, with fills and a realized profit), a pending ETH order, an order
    rejected by the (then active) kill switch, agent performance and one portfolio snapshot."""
    from decimal import Decimal

    from safety.services.kill_switch import kill_switch_engage
    from tests.factories import make_agent
    from trading.services.orders import order_create, order_execute
    from trading.services.performance import agent_performance_update
    from trading.services.snapshots import portfolio_snapshot_take

    btc, eth = make_agent(name="btc-bot"), make_agent(name="eth-bot", symbols=["ETH/USDT"])
    feed.price = Decimal("100")
    buy = order_execute(order_id=order_create(agent=btc, symbol="BTC/USDT", side="buy", quantity=Decimal("1")).pk)
    feed.price = Decimal("110")
    sell = order_execute(order_id=order_create(agent=btc, symbol="BTC/USDT", side="sell", quantity=Decimal("1")).pk)
    pending = order_create(agent=eth, symbol="ETH/USDT", side="buy", quantity=Decimal("2"), enqueue=False)
    kill_switch_engage(mode="HALT_ONLY", reason="for a rejected order", actor="setup", source="test")
    rejected = order_create(agent=eth, symbol="ETH/USDT", side="buy", quantity=Decimal("1"), enqueue=False)
    agent_performance_update()
    portfolio_snapshot_take()
    return {"btc": btc, "eth": eth, "buy": buy, "sell": sell, "pending": pending, "rejected": rejected}


def db_fingerprint() -> tuple:
    """Everything an API write or a command could change: compare before and after a refusal."""
    from django_celery_beat.models import PeriodicTask

    from safety.models import (
        AuditEvent,
        CircuitBreakerEvent,
        CircuitBreakerState,
        KillSwitchEvent,
        KillSwitchState,
        RiskLimit,
    )
    from trading.models import Agent, Candle, Fill, Order, Position

    return (
        list(Agent.objects.order_by("pk").values()),
        list(RiskLimit.objects.order_by("pk").values()),
        list(KillSwitchState.objects.values()),
        list(CircuitBreakerState.objects.order_by("pk").values()),
        list(PeriodicTask.objects.order_by("pk").values("name", "enabled", "interval_id")),
        list(Order.objects.order_by("pk").values("pk", "status")),
        Fill.objects.count(), Position.objects.count(), Candle.objects.count(),
        KillSwitchEvent.objects.count(), CircuitBreakerEvent.objects.count(), AuditEvent.objects.count(),
    )
