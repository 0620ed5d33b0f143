"""Property tests of the breaker state machine and the pre-trade limit rules (pure functions)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from safety.models import BreakerStatus
from safety.services.breakers import aggregate_status, breaker_next_state
from safety.services.risk import Limits, OrderFacts, limits_check

T0 = datetime(2026, 1, 1, tzinfo=UTC)
steps = st.lists(st.tuples(st.integers(min_value=0, max_value=120), st.booleans()), min_size=1, max_size=60)


@settings(max_examples=400)
@given(steps, st.integers(min_value=1, max_value=90), st.integers(min_value=0, max_value=60), st.booleans())
def test_machine_when_any_sequence_then_transitions_respect_the_rules(sequence, recovery, probe, count_based):
    state, changed_at, now = BreakerStatus.CLOSED, None, T0
    for advance, tripped in sequence:
        now += timedelta(seconds=advance)
        t = breaker_next_state(state=state, tripped=tripped, now=now, changed_at=changed_at,
                               recovery_seconds=recovery, probe_seconds=probe, count_based=count_based)
        if t.action is None:
            assert t.state == state
        else:
            # Only these moves exist; CLOSED never jumps to HALF_OPEN and OPEN never closes directly.
            assert (state, t.state, t.action) in {
                (BreakerStatus.CLOSED, BreakerStatus.OPEN, "trip"),
                (BreakerStatus.OPEN, BreakerStatus.HALF_OPEN, "half_open"),
                (BreakerStatus.HALF_OPEN, BreakerStatus.OPEN, "trip"),
                (BreakerStatus.HALF_OPEN, BreakerStatus.CLOSED, "close"),
            }
            if t.action == "trip":
                assert tripped  # nothing trips without the value at its threshold
            if t.action == "half_open":
                assert (now - changed_at).total_seconds() >= recovery
                assert count_based or not tripped
            if t.action == "close":
                assert not tripped and (now - changed_at).total_seconds() >= probe
            state, changed_at = t.state, now
        if state == BreakerStatus.CLOSED:
            assert not (t.action is None and tripped)  # a tripped CLOSED breaker always opens


@given(st.lists(st.sampled_from(list(BreakerStatus.values))))
def test_aggregate_when_any_states_then_open_beats_half_open_beats_closed(states):
    result = aggregate_status(states)
    if BreakerStatus.OPEN in states:
        assert result == BreakerStatus.OPEN
    elif BreakerStatus.HALF_OPEN in states:
        assert result == BreakerStatus.HALF_OPEN
    else:
        assert result == BreakerStatus.CLOSED


money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2)
maybe_money = st.none() | money
facts_strategy = st.builds(
    OrderFacts, side=st.sampled_from(["buy", "sell"]), quantity=st.decimals(min_value=Decimal("0.001"),
                                                                           max_value=Decimal("100"), places=3),
    price=money, last_price=money, is_limit=st.booleans(), reduces_only=st.booleans(),
    position_quantity=st.decimals(min_value=Decimal("-50"), max_value=Decimal("50"), places=3),
    gross_exposure=st.decimals(min_value=Decimal("0"), max_value=Decimal("500000"), places=2),
    open_orders=st.integers(min_value=0, max_value=100), orders_last_minute=st.integers(min_value=0, max_value=200),
)
limits_strategy = st.builds(
    Limits, max_order_notional=maybe_money, max_position_notional=maybe_money, max_gross_exposure=maybe_money,
    max_open_orders=st.none() | st.integers(min_value=1, max_value=100),
    max_orders_per_minute=st.none() | st.integers(min_value=1, max_value=200),
    price_band=st.none() | st.decimals(min_value=Decimal("0.001"), max_value=Decimal("0.5"), places=3),
)


@settings(max_examples=500)
@given(facts_strategy, limits_strategy)
def test_limits_when_allowed_then_every_configured_limit_holds(facts, limits):
    decision = limits_check(facts, limits)
    if not decision.allowed:
        assert decision.reason.startswith("risk limit: ")
        return
    if limits.max_open_orders is not None:
        assert facts.open_orders < limits.max_open_orders
    if limits.max_orders_per_minute is not None:
        assert facts.orders_last_minute < limits.max_orders_per_minute
    if facts.is_limit and limits.price_band is not None:
        assert abs(facts.price / facts.last_price - 1) <= limits.price_band
    if not facts.reduces_only:
        if limits.max_order_notional is not None:
            assert facts.quantity * facts.price <= limits.max_order_notional
        signed = facts.quantity if facts.side == "buy" else -facts.quantity
        if limits.max_position_notional is not None:
            assert abs(facts.position_quantity + signed) * facts.price <= limits.max_position_notional


@given(facts_strategy)
def test_limits_when_none_configured_then_everything_allowed(facts):
    assert limits_check(facts, Limits()).allowed


@given(facts_strategy, money)
def test_limits_when_order_reduces_only_then_notional_limits_never_refuse(facts, cap):
    reducing = OrderFacts(**{**facts.__dict__, "reduces_only": True, "is_limit": False})
    assert limits_check(reducing, Limits(max_order_notional=cap, max_position_notional=cap,
                                         max_gross_exposure=cap)).allowed
