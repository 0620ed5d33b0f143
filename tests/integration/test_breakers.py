"""Circuit breakers against real PostgreSQL and Redis: each trips at its threshold (not
below), recovers through HALF_OPEN after its period, and resets only with a reason.

Time is a parameter of the services (`now=`), so recovery periods are crossed by passing a
later `now`, never by sleeping.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from safety.models import (
    AuditEvent,
    BreakerKind,
    BreakerScope,
    BreakerStatus,
    CircuitBreakerConfig,
    CircuitBreakerEvent,
    CircuitBreakerState,
)
from safety.services import stats
from safety.services.breakers import breaker_reset, breakers_check
from safety.services.kill_switch import kill_switch_engage
from tinywindow.exceptions import ValidationError
from tinywindow.redis_client import BREAKER_STATUS_KEY
from trading.order_states import OrderStatus
from trading.services.orders import order_create, order_execute

pytestmark = pytest.mark.django_db
D = Decimal


def breaker(kind, threshold, *, scope=BreakerScope.GLOBAL, name=None, **extra):
    return CircuitBreakerConfig.objects.create(name=name or kind, kind=kind, scope=scope, threshold=D(threshold),
                                               **extra)


def state_of(name):
    config_name, _, target = name.partition(":")
    return CircuitBreakerState.objects.get(config__name=config_name, target=target).state


def round_trip(agent, feed, buy_price, sell_price, quantity="1"):
    feed.price = D(buy_price)
    order_execute(order_id=order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D(quantity)).pk)
    feed.price = D(sell_price)
    order_execute(order_id=order_create(agent=agent, symbol="BTC/USDT", side="sell", quantity=D(quantity)).pk)


def test_daily_loss_when_loss_below_threshold_then_closed_and_at_threshold_then_open(agent, fixed_price_feed):
    round_trip(agent, fixed_price_feed, "100", "90")  # loses 10 plus fees and slippage
    from trading.models import Fill

    loss = -sum(f.realized_pnl for f in Fill.objects.all())
    below = breaker(BreakerKind.DAILY_LOSS, loss + D("0.01"), name="loss_high")
    at = breaker(BreakerKind.DAILY_LOSS, loss, name="loss_exact")
    breakers_check()
    assert state_of(below.name) == BreakerStatus.CLOSED
    assert state_of(at.name) == BreakerStatus.OPEN
    event = CircuitBreakerEvent.objects.get(breaker="loss_exact", action="trip")
    assert event.threshold_value == loss and event.actual_value == loss
    assert "realized_pnl_today" in event.details and event.reason.startswith("Daily loss")


def test_consecutive_losses_when_n_losing_trades_then_agent_breaker_opens_for_that_agent_only(agent, fixed_price_feed):
    from tests.factories import make_agent

    other = make_agent()
    breaker(BreakerKind.CONSECUTIVE_LOSSES, "3", scope=BreakerScope.AGENT)
    for _ in range(2):
        round_trip(agent, fixed_price_feed, "100", "95")
    breakers_check()
    assert state_of(f"consecutive_losses:{agent.pk}") == BreakerStatus.CLOSED
    round_trip(agent, fixed_price_feed, "100", "95")
    breakers_check()
    assert state_of(f"consecutive_losses:{agent.pk}") == BreakerStatus.OPEN
    assert state_of(f"consecutive_losses:{other.pk}") == BreakerStatus.CLOSED
    refused = order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("1"))
    assert refused.status == OrderStatus.REJECTED and "circuit breaker consecutive_losses" in refused.reject_reason
    allowed = order_create(agent=other, symbol="BTC/USDT", side="buy", quantity=D("1"))
    assert allowed.status == OrderStatus.PENDING


def test_api_error_rate_when_half_the_calls_fail_then_exchange_breaker_opens():
    cfg = breaker(BreakerKind.API_ERROR_RATE, "0.5", scope=BreakerScope.EXCHANGE, min_samples=10, window_seconds=60)
    for i in range(10):
        stats.api_call_record(exchange="binance", ok=i >= 4)  # 4 errors of 10
    breakers_check()
    assert state_of(f"{cfg.name}:binance") == BreakerStatus.CLOSED
    stats.api_call_record(exchange="binance", ok=False)
    stats.api_call_record(exchange="binance", ok=False)  # 6 of 12
    breakers_check()
    assert state_of(f"{cfg.name}:binance") == BreakerStatus.OPEN


def test_api_error_rate_when_too_few_calls_then_not_tripped():
    cfg = breaker(BreakerKind.API_ERROR_RATE, "0.5", scope=BreakerScope.EXCHANGE, min_samples=10)
    for _ in range(3):
        stats.api_call_record(exchange="kraken", ok=False)
    breakers_check()
    assert state_of(f"{cfg.name}:kraken") == BreakerStatus.CLOSED


def test_reject_rate_when_risk_rejects_dominate_then_opens_but_kill_switch_rejects_do_not_count(agent,
                                                                                                fixed_price_feed):
    from safety.models import RiskLimit

    breaker(BreakerKind.REJECT_RATE, "0.5", min_samples=4, window_seconds=300)
    kill_switch_engage(mode="HALT_ONLY", reason="r", actor="a", source="s")
    for _ in range(6):
        order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("1"))
    breakers_check(kinds=[BreakerKind.REJECT_RATE])
    assert state_of("reject_rate") == BreakerStatus.CLOSED  # safety rejects are not venue/risk rejects
    from safety.services.kill_switch import kill_switch_disengage

    kill_switch_disengage(actor="a", source="s")
    RiskLimit.objects.create(agent=agent, max_order_notional=D("50"))
    order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("0.1"))  # 10: allowed
    for _ in range(3):
        assert order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("1")).status == "rejected"
    breakers_check(kinds=[BreakerKind.REJECT_RATE])
    assert state_of("reject_rate") == BreakerStatus.OPEN  # 3 of 4


def test_price_shock_when_move_reaches_threshold_then_symbol_breaker_opens(agent, fixed_price_feed):
    breaker(BreakerKind.PRICE_SHOCK, "0.08", scope=BreakerScope.SYMBOL, window_seconds=300)
    fixed_price_feed.path = [D("100"), D("101"), D("103"), D("107")]
    breakers_check()
    assert state_of("price_shock:BTC/USDT") == BreakerStatus.CLOSED
    fixed_price_feed.path = [D("100"), D("101"), D("103"), D("108")]
    breakers_check()
    assert state_of("price_shock:BTC/USDT") == BreakerStatus.OPEN


def test_stale_data_when_newest_candle_older_than_threshold_then_opens():
    breaker(BreakerKind.STALE_DATA, "120", scope=BreakerScope.SYMBOL)
    now = timezone.now()
    stats.market_data_seen(symbol="ETH/USDT", candle_close_ts=(now - timedelta(seconds=119)).timestamp())
    breakers_check(now=now)
    assert state_of("stale_data:ETH/USDT") == BreakerStatus.CLOSED
    breakers_check(now=now + timedelta(seconds=2))
    assert state_of("stale_data:ETH/USDT") == BreakerStatus.OPEN


def test_drawdown_when_equity_falls_below_peak_by_threshold_then_opens(agent, fixed_price_feed):
    from trading.services.snapshots import portfolio_snapshot_take

    breaker(BreakerKind.DRAWDOWN, "0.05")
    order_execute(order_id=order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("40")).pk)
    portfolio_snapshot_take()  # peak recorded at ~10000
    fixed_price_feed.price = D("90")  # 40 units lose ~400 + costs: about 4.1% of 10000
    breakers_check()
    assert state_of("drawdown") == BreakerStatus.CLOSED
    fixed_price_feed.price = D("85")  # about 6.1%
    breakers_check()
    assert state_of("drawdown") == BreakerStatus.OPEN


def test_recovery_when_period_passes_then_half_open_probe_then_closed(agent, fixed_price_feed):
    breaker(BreakerKind.STALE_DATA, "120", scope=BreakerScope.SYMBOL, recovery_seconds=60, probe_seconds=30,
            probe_max_orders=1)
    t0 = timezone.now()
    stats.market_data_seen(symbol="BTC/USDT", candle_close_ts=(t0 - timedelta(seconds=500)).timestamp())
    breakers_check(now=t0)
    assert state_of("stale_data:BTC/USDT") == BreakerStatus.OPEN
    stats.market_data_seen(symbol="BTC/USDT", candle_close_ts=t0.timestamp() + 59)  # data flows again
    breakers_check(now=t0 + timedelta(seconds=59))
    assert state_of("stale_data:BTC/USDT") == BreakerStatus.OPEN  # recovery period not over
    breakers_check(now=t0 + timedelta(seconds=60))
    assert state_of("stale_data:BTC/USDT") == BreakerStatus.HALF_OPEN
    probe = order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("1"))
    second = order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("1"))
    assert probe.status == OrderStatus.PENDING
    assert second.status == OrderStatus.REJECTED and "probe limit" in second.reject_reason
    breakers_check(now=t0 + timedelta(seconds=89))
    assert state_of("stale_data:BTC/USDT") == BreakerStatus.HALF_OPEN
    breakers_check(now=t0 + timedelta(seconds=90))
    assert state_of("stale_data:BTC/USDT") == BreakerStatus.CLOSED
    actions = list(CircuitBreakerEvent.objects.order_by("created_at").values_list("action", flat=True))
    assert actions == ["trip", "half_open", "close"]


def test_half_open_when_value_trips_again_then_back_to_open():
    breaker(BreakerKind.STALE_DATA, "120", scope=BreakerScope.SYMBOL, recovery_seconds=10)
    t0 = timezone.now()
    stats.market_data_seen(symbol="SOL/USDT", candle_close_ts=t0.timestamp() - 500)
    breakers_check(now=t0)
    stats.market_data_seen(symbol="SOL/USDT", candle_close_ts=t0.timestamp() + 10)
    breakers_check(now=t0 + timedelta(seconds=10))
    assert state_of("stale_data:SOL/USDT") == BreakerStatus.HALF_OPEN
    breakers_check(now=t0 + timedelta(seconds=200))  # no new data for 190 s
    assert state_of("stale_data:SOL/USDT") == BreakerStatus.OPEN


def test_open_breaker_when_kill_switch_flattens_then_reduce_only_orders_still_pass(agent, fixed_price_feed):
    order_execute(order_id=order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("1")).pk)
    breaker(BreakerKind.STALE_DATA, "1", scope=BreakerScope.SYMBOL)
    stats.market_data_seen(symbol="BTC/USDT", candle_close_ts=0)
    breakers_check()
    kill_switch_engage(mode="CLOSE_POSITIONS", reason="flatten", actor="a", source="s")
    from safety.services.enforcement import kill_switch_enforce_now

    kill_switch_enforce_now()
    from trading.models import Order, Position

    flatten = Order.objects.get(origin="kill_switch")
    assert order_execute(order_id=flatten.pk).status == OrderStatus.EXECUTED
    assert Position.objects.get(agent=agent).quantity == 0


def test_reset_when_reason_empty_then_error_and_when_given_then_closed_with_event(
        redis_client, django_capture_on_commit_callbacks):
    breaker(BreakerKind.STALE_DATA, "1", scope=BreakerScope.SYMBOL)
    stats.market_data_seen(symbol="BTC/USDT", candle_close_ts=0)
    with django_capture_on_commit_callbacks(execute=True):  # the mirror is written after the commit
        breakers_check()
    assert redis_client.get(BREAKER_STATUS_KEY) == "OPEN"
    assert redis_client.get("tinywindow:circuit_breaker:stale_data:BTC/USDT") == "OPEN"
    for bad in ("", "   ", None):
        with pytest.raises(ValidationError):
            breaker_reset(reason=bad, actor="ops")
    assert state_of("stale_data:BTC/USDT") == BreakerStatus.OPEN
    with django_capture_on_commit_callbacks(execute=True):
        assert breaker_reset(reason="Market conditions stabilized", actor="ops") == ["stale_data:BTC/USDT"]
    assert state_of("stale_data:BTC/USDT") == BreakerStatus.CLOSED
    assert CircuitBreakerEvent.objects.filter(action="reset", reason="Market conditions stabilized").exists()
    assert AuditEvent.objects.filter(action="circuit_breaker.reset", actor="ops").exists()
    assert redis_client.get(BREAKER_STATUS_KEY) == "CLOSED"


def test_reset_when_name_unknown_then_validation_error():
    with pytest.raises(ValidationError) as info:
        breaker_reset(reason="x", actor="ops", name="no_such_breaker")
    assert info.value.field == "name"


def test_shell_facade_when_used_as_in_the_runbook_then_resets_and_requires_reason():
    from tinywindow.safety import CircuitBreaker, circuit_breaker

    breaker(BreakerKind.STALE_DATA, "1", scope=BreakerScope.SYMBOL)
    stats.market_data_seen(symbol="ETH/USDT", candle_close_ts=0)
    breakers_check()
    with pytest.raises(ValidationError):
        circuit_breaker.reset()
    with pytest.raises(ValidationError):
        circuit_breaker.reset(reason="")
    assert circuit_breaker.status() == {"stale_data:ETH/USDT": "OPEN"}
    assert circuit_breaker.reset(reason="Market conditions stabilized") == ["stale_data:ETH/USDT"]
    assert CircuitBreaker("stale_data").status() == {"stale_data:ETH/USDT": "CLOSED"}


# transaction=True: the shell process commits its reset event to the test database, where a
# rolled-back test would leave it for the next test to find (test_admin's reset action did).
@pytest.mark.django_db(transaction=True)
def test_runbook_shell_command_when_run_in_manage_py_shell_then_resets(tmp_path):
    """The runbook's two lines, verbatim, in `python manage.py shell` (a separate process)."""
    from tests.helpers import manage

    code = ('from tinywindow.safety import CircuitBreaker\n'
            'circuit_breaker.reset(reason="Market conditions stabilized")\n')
    # The shell process uses the same test database through DATABASE_URL.
    import os

    from django.conf import settings

    db = settings.DATABASES["default"]
    env = dict(os.environ, DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}")
    result = manage("shell", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    empty = manage("shell", "-c", "from tinywindow.safety import circuit_breaker\ncircuit_breaker.reset(reason='')",
                   env=env)
    assert empty.returncode != 0 and "needs a reason" in empty.stderr


def _trip_and_clear(kind, agent, feed):
    """For each kind: (config kwargs, make the value reach the threshold, bring it back below).
    The clear step may return a later `now` at which the value is below again."""
    t0 = timezone.now()
    if kind == BreakerKind.DAILY_LOSS:
        return ({"threshold": "5"}, lambda: round_trip(agent, feed, "100", "90"),
                lambda: t0 + timedelta(days=1))
    if kind == BreakerKind.DRAWDOWN:
        from trading.services.snapshots import portfolio_snapshot_take

        def trip():
            order_execute(order_id=order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("40")).pk)
            portfolio_snapshot_take()
            feed.price = D("80")

        def clear():
            feed.price = D("101")
            return t0
        return {"threshold": "0.05"}, trip, clear
    if kind == BreakerKind.CONSECUTIVE_LOSSES:
        return ({"threshold": "2", "scope": BreakerScope.AGENT},
                lambda: [round_trip(agent, feed, "100", "95") for _ in range(2)], lambda: t0)
    if kind == BreakerKind.API_ERROR_RATE:
        return ({"threshold": "0.5", "scope": BreakerScope.EXCHANGE, "min_samples": 4, "window_seconds": 30},
                lambda: [stats.api_call_record(exchange="paper", ok=False) for _ in range(4)],
                lambda: t0 + timedelta(seconds=60))
    if kind == BreakerKind.REJECT_RATE:
        from safety.models import RiskLimit

        def trip():
            RiskLimit.objects.create(agent=agent, max_order_notional=D("1"))
            for _ in range(4):
                order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("1"))
        return ({"threshold": "0.5", "min_samples": 4, "window_seconds": 30}, trip,
                lambda: t0 + timedelta(seconds=60))
    if kind == BreakerKind.PRICE_SHOCK:
        def clear():
            feed.path = [D("100")] * 4
            return t0
        return ({"threshold": "0.08", "scope": BreakerScope.SYMBOL},
                lambda: setattr(feed, "path", [D("100"), D("104"), D("109")]), clear)
    # stale data
    def clear_stale():
        stats.market_data_seen(symbol="BTC/USDT", candle_close_ts=t0.timestamp() + 3600)
        return t0
    return ({"threshold": "60", "scope": BreakerScope.SYMBOL},
            lambda: stats.market_data_seen(symbol="BTC/USDT", candle_close_ts=t0.timestamp() - 600), clear_stale)


@pytest.mark.parametrize("kind", list(BreakerKind.values))
def test_each_breaker_when_tripped_then_recovers_through_half_open_after_its_period(kind, agent, fixed_price_feed):
    """Real time, shortened periods (1 s), waited on as a condition: CLOSED → OPEN →
    HALF_OPEN → CLOSED, with the events to show it."""
    from tests.helpers import wait_until

    config_kwargs, trip, clear = _trip_and_clear(kind, agent, fixed_price_feed)
    threshold = config_kwargs.pop("threshold")
    cfg = breaker(kind, threshold, recovery_seconds=1, probe_seconds=1, **config_kwargs)
    trip()
    changes = breakers_check(kinds=[kind])
    assert [c.action for c in changes] == ["trip"], changes
    name = changes[0].name
    later = clear()
    # Where the passing of a window or a day is what clears the value, the breaker's clock runs
    # that much ahead of the wall clock; it still advances in real time.
    offset = max(timedelta(0), later - timezone.now())

    def reached(state):
        breakers_check(kinds=[kind], now=timezone.now() + offset)
        return state_of(name) == state

    wait_until(lambda: reached(BreakerStatus.HALF_OPEN), timeout=10, interval=0.2, message=f"{name} half-open")
    wait_until(lambda: reached(BreakerStatus.CLOSED), timeout=10, interval=0.2, message=f"{name} closed")
    actions = list(CircuitBreakerEvent.objects.filter(breaker=name).order_by("created_at")
                   .values_list("action", flat=True))
    assert actions == ["trip", "half_open", "close"]
    assert cfg.recovery_seconds == 1


def test_inline_check_after_fills_when_many_agents_then_only_the_filled_agents_measured(
        fixed_price_feed, redis_client, django_capture_on_commit_callbacks):
    """An inline check after fills measures the agent-scoped breakers of the agents that filled,
    not every agent: its cost must not grow with the number of agents (the 200-agent soak)."""
    import json

    from safety.services.breakers import CHECK_AGENTS_KEY, breakers_check_soon
    from safety.tasks import check_breakers
    from tests.factories import make_agent

    kinds = ["consecutive_losses", "daily_loss", "drawdown"]
    agents = [make_agent(name=f"inline-{i}") for i in range(4)]
    losses = breaker(BreakerKind.CONSECUTIVE_LOSSES, "3", scope=BreakerScope.AGENT, name="streak")
    breakers_check(kinds=["consecutive_losses"])  # the periodic full check: a row per agent
    checked = lambda: dict(CircuitBreakerState.objects.filter(config=losses)  # noqa: E731
                           .values_list("target", "last_checked_at"))
    before = checked()
    assert set(before) == {str(a.pk) for a in agents}

    with django_capture_on_commit_callbacks(execute=True):  # the fill's commit asks for the check
        round_trip(agents[1], fixed_price_feed, "100", "90")
    assert redis_client.smembers(CHECK_AGENTS_KEY.format(kinds=",".join(kinds))) == {str(agents[1].pk)}
    breakers_check_soon(kinds, agent_id=agents[3].pk)  # throttled (same second): still joins the set
    queued = [json.loads(raw) for raw in redis_client.lrange("safety", 0, -1)]
    assert [m["headers"]["task"] for m in queued] == ["safety.tasks.check_breakers"]

    check_breakers(kinds=kinds, scoped=True)  # what the engine runs for that message

    after = checked()
    assert {t for t in after if after[t] != before[t]} == {str(agents[1].pk), str(agents[3].pk)}
    assert not redis_client.exists(CHECK_AGENTS_KEY.format(kinds=",".join(kinds)))  # taken by the check
    check_breakers(kinds=kinds, scoped=True)  # a check with no agent left measures no agent
    assert checked() == after
    check_breakers(kinds=kinds)  # unscoped (a reject, an API error, beat): every agent
    assert all(checked()[t] > after[t] for t in after)


# --- the check at scale: statements per config, not per target --------------------------------

def test_full_check_when_four_times_the_new_agents_then_same_number_of_statements(agent):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.factories import make_agent

    breaker(BreakerKind.CONSECUTIVE_LOSSES, "3", scope=BreakerScope.AGENT)
    breaker(BreakerKind.DAILY_LOSS, "1000")

    def statements() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as first:  # creates the new agents' state rows
            breakers_check()
        with CaptureQueriesContext(connection) as steady:
            breakers_check()
        return len(first), len(steady)

    breakers_check()  # the global breaker's state row and the first agent's exist from here on
    make_agent()
    few = statements()  # one new agent
    for _ in range(4):
        make_agent()
    many = statements()  # four new agents
    assert many == few, (few, many)
    assert CircuitBreakerState.objects.filter(config__name="consecutive_losses").count() == 6
    assert not CircuitBreakerState.objects.filter(last_checked_at__isnull=True).exists()


def test_consecutive_losses_of_many_agents_when_measured_at_once_then_as_one_by_one(agent, fixed_price_feed):
    from safety.services import breakers
    from tests.factories import make_agent

    config = breaker(BreakerKind.CONSECUTIVE_LOSSES, "2", scope=BreakerScope.AGENT)
    winner, idle, since_reset = make_agent(), make_agent(), make_agent()
    for _ in range(3):
        round_trip(agent, fixed_price_feed, "100", "95")  # three losses: deeper than the threshold
    round_trip(winner, fixed_price_feed, "100", "95")
    round_trip(winner, fixed_price_feed, "100", "110")  # the newest trade wins: no streak
    round_trip(since_reset, fixed_price_feed, "100", "95")
    round_trip(since_reset, fixed_price_feed, "100", "95")
    breakers_check()
    breaker_reset(reason="test", actor="test", name=f"consecutive_losses:{since_reset.pk}")  # counts afresh
    round_trip(since_reset, fixed_price_feed, "100", "95")
    states = breakers._states_of(config, [str(a.pk) for a in (agent, winner, idle, since_reset)])
    assert states[str(since_reset.pk)].counting_since is not None

    at_once = breakers._measure_consecutive_losses_of_agents(config, states)
    now = timezone.now()
    one_by_one = {t: breakers._measure_consecutive_losses(config, t, now, s.counting_since) for t, s in states.items()}
    assert at_once == one_by_one
    assert {t: m.value for t, m in at_once.items()} == {
        str(agent.pk): 3, str(winner.pk): 0, str(idle.pk): 0, str(since_reset.pk): 1}


def test_check_when_breaker_reset_after_it_was_read_then_decided_again_on_the_reset_state(agent, fixed_price_feed):
    from safety.services import breakers

    round_trip(agent, fixed_price_feed, "100", "90")
    config = breaker(BreakerKind.DAILY_LOSS, "1")
    breakers_check()
    assert state_of("daily_loss") == BreakerStatus.OPEN
    states = breakers._states_of(config, [""])  # read: OPEN, inside its recovery period (no change due)
    breaker_reset(reason="operator", actor="ops", name="daily_loss")  # meanwhile: CLOSED again
    now = timezone.now()
    changes = breakers._apply(config, states, breakers._measure_all(config, states, now), now)
    # The loss is still there: from the reset state (CLOSED) the measurement trips it again,
    # where a write based on the stale read (OPEN, nothing due) would have left it CLOSED.
    assert [(c.name, c.action) for c in changes] == [("daily_loss", "trip")]
    assert state_of("daily_loss") == BreakerStatus.OPEN
    assert list(CircuitBreakerEvent.objects.filter(breaker="daily_loss").order_by("pk")
                .values_list("action", flat=True)) == ["trip", "reset", "trip"]
