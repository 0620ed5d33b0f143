"""Average-cost accounting: hand-checked cases and a property over any fill sequence."""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.services.positions import position_apply_fill, unrealized_pnl

D = Decimal


def test_apply_fill_when_round_trip_then_realized_is_proceeds_minus_costs_and_fees():
    opened = position_apply_fill(quantity=D(0), average_price=D(0), side="buy", fill_quantity=D(2),
                                 fill_price=D(100), fee=D("0.2"))
    assert opened.quantity == D(2)
    assert opened.average_price == D("100.1")  # the buy fee is part of the cost basis
    assert opened.realized_pnl == 0
    closed = position_apply_fill(quantity=opened.quantity, average_price=opened.average_price, side="sell",
                                 fill_quantity=D(2), fill_price=D(110), fee=D("0.22"))
    # (220 - 0.22) - (200 + 0.2)
    assert closed.realized_pnl == D("19.58")
    assert closed.quantity == 0 and closed.average_price == 0


def test_apply_fill_when_partial_close_then_average_cost_unchanged():
    change = position_apply_fill(quantity=D(4), average_price=D(50), side="sell", fill_quantity=D(1),
                                 fill_price=D(60), fee=D(0))
    assert change.quantity == D(3)
    assert change.average_price == D(50)
    assert change.realized_pnl == D(10)


def test_apply_fill_when_sell_flips_long_to_short_then_new_basis_is_fill_price():
    change = position_apply_fill(quantity=D(1), average_price=D(100), side="sell", fill_quantity=D(3),
                                 fill_price=D(90), fee=D(0))
    assert change.quantity == D(-2)
    assert change.average_price == D(90)
    assert change.realized_pnl == D(-10)


def test_apply_fill_when_quantity_not_positive_then_raises():
    with pytest.raises(ValueError):
        position_apply_fill(quantity=D(0), average_price=D(0), side="buy", fill_quantity=D(0), fill_price=D(1),
                            fee=D(0))


fills = st.lists(
    st.tuples(
        st.sampled_from(["buy", "sell"]),
        st.decimals(min_value=D("0.001"), max_value=D("50"), places=3),
        st.decimals(min_value=D("1"), max_value=D("1000"), places=2),
        st.decimals(min_value=D("0"), max_value=D("0.01"), places=4),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(fills, st.decimals(min_value=D("1"), max_value=D("1000"), places=2))
def test_apply_fill_when_any_sequence_then_realized_plus_unrealized_equals_equity_change(sequence, mark):
    """Equity change (cash flows + position marked to market) == realized + unrealized PnL.

    Fees are inside both sides: they reduce cash, and they are inside realized PnL or the cost
    basis. The tolerance only absorbs Decimal division rounding in the average price.
    """
    quantity, average, realized, cash = D(0), D(0), D(0), D(0)
    for side, qty, price, fee_rate in sequence:
        fee = (qty * price * fee_rate).quantize(D("0.00000001"))
        change = position_apply_fill(quantity=quantity, average_price=average, side=side, fill_quantity=qty,
                                     fill_price=price, fee=fee)
        cash += (-qty * price if side == "buy" else qty * price) - fee
        quantity, average = change.quantity, change.average_price
        realized += change.realized_pnl
    equity_change = cash + quantity * mark
    total = realized + unrealized_pnl(quantity=quantity, average_price=average, mark_price=mark)
    assert abs(equity_change - total) < D("0.000001")
