import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinywindow.exceptions import InvalidOrderTransition
from trading.order_states import ALLOWED_TRANSITIONS, TERMINAL_STATUSES, OrderStatus, check_transition

STATUSES = list(OrderStatus.values)


def test_transition_when_pending_to_submitted_then_allowed():
    check_transition(OrderStatus.PENDING, OrderStatus.SUBMITTED)


def test_transition_when_executed_to_anything_then_raises():
    for target in STATUSES:
        with pytest.raises(InvalidOrderTransition):
            check_transition(OrderStatus.EXECUTED, target)


def test_transition_when_cancelled_then_only_a_late_fill_is_allowed():
    assert ALLOWED_TRANSITIONS[OrderStatus.CANCELLED] == {OrderStatus.PARTIALLY_FILLED, OrderStatus.EXECUTED}


@given(st.sampled_from(STATUSES), st.sampled_from(STATUSES))
def test_transition_when_any_pair_then_allowed_exactly_per_table(current, new):
    if new in ALLOWED_TRANSITIONS[current]:
        check_transition(current, new)
    else:
        with pytest.raises(InvalidOrderTransition):
            check_transition(current, new)


def test_table_when_read_then_every_terminal_state_except_cancelled_is_final():
    for status in TERMINAL_STATUSES - {OrderStatus.CANCELLED}:
        assert ALLOWED_TRANSITIONS[status] == frozenset()
