"""Strategy interface, SmaCross and load_strategy, on hand-built candles (no Django, no feed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinywindow.exceptions import ValidationError
from trading.feeds.base import Candle
from trading.strategies.base import Decision, Strategy, load_strategy
from trading.strategies.sma_cross import SmaCross

T0 = datetime(2025, 6, 1, tzinfo=UTC)
ZERO = Decimal(0)


def candles_from_closes(closes: Sequence[Decimal | int | str]) -> list[Candle]:
    """5 s candles whose close is given; open = previous close, so the bars are contiguous."""
    out: list[Candle] = []
    prev = Decimal(closes[0])
    for i, raw in enumerate(closes):
        close = Decimal(raw)
        out.append(
            Candle(
                ts=T0 + timedelta(seconds=5 * i),
                open=prev,
                high=max(prev, close),
                low=min(prev, close),
                close=close,
                volume=Decimal("1.0000"),
            )
        )
        prev = close
    return out


# -- SmaCross.decide ----------------------------------------------------------------------


def test_decide_when_fast_crosses_above_slow_then_target_is_exposure() -> None:
    # Flat at 100 for 17 bars, then a jump: the 3-bar mean leaps above the 6-bar mean.
    strategy = SmaCross(fast=3, slow=6, exposure="0.5")
    decision = strategy.decide(candles_from_closes([100] * 17 + [110, 120, 130]), ZERO)
    assert decision.target_exposure == Decimal("0.5")
    assert "hold 50% long" in decision.reason


def test_decide_when_fast_crosses_below_slow_then_target_is_zero() -> None:
    strategy = SmaCross(fast=3, slow=6, exposure="0.5")
    decision = strategy.decide(candles_from_closes([130, 130, 130, 120, 110, 100]), Decimal("0.2"))
    assert decision.target_exposure == ZERO
    assert "hold 0% (flat)" in decision.reason


def test_decide_when_series_rises_then_falls_then_target_follows_the_cross() -> None:
    strategy = SmaCross(fast=2, slow=4, exposure="1")
    closes = [10, 10, 10, 10, 12, 14, 16, 14, 12, 10, 8]
    targets = [
        strategy.decide(candles_from_closes(closes[: n + 1]), ZERO).target_exposure for n in range(3, len(closes))
    ]
    # fast>slow from the first up-move until the fast mean drops below the slow one.
    assert targets == [ZERO, Decimal(1), Decimal(1), Decimal(1), Decimal(1), ZERO, ZERO, ZERO]


def test_decide_when_smas_are_equal_then_flat() -> None:
    decision = SmaCross().decide(candles_from_closes([100] * 20), ZERO)
    assert decision.target_exposure == ZERO
    assert "<=" in decision.reason


def test_decide_when_fewer_than_slow_candles_then_no_change_with_warmup_reason() -> None:
    decision = SmaCross(fast=5, slow=20).decide(candles_from_closes([100] * 7), ZERO)
    assert decision.target_exposure is None
    assert decision.reason == "warming up: 7 of 20 candles"


def test_decide_when_no_candles_then_no_change() -> None:
    assert SmaCross().decide([], ZERO).target_exposure is None


def test_decide_when_position_already_at_target_then_target_still_returned() -> None:
    # The order layer, not the strategy, turns "already there" into "no order".
    strategy = SmaCross(fast=3, slow=6, exposure="0.5")
    decision = strategy.decide(candles_from_closes([100] * 5 + [110, 120, 130]), Decimal("1.5"))
    assert decision.target_exposure == Decimal("0.5")


def test_decide_when_deciding_then_reason_states_both_smas_and_last_close() -> None:
    closes = ["61000.00"] * 15 + ["61200.00", "61250.10", "61300.20", "61350.30", "61420.00"]
    decision = SmaCross(fast=5, slow=20).decide(candles_from_closes(closes), ZERO)
    assert decision.reason == (
        "fast SMA(5)=61304.12 > slow SMA(20)=61076.03, last close 61420.00: hold 50% long"
    )


def test_decide_when_smas_differ_below_price_precision_then_reason_shows_enough_digits() -> None:
    closes = ["100.00"] * 19 + ["100.01"]
    decision = SmaCross(fast=5, slow=20).decide(candles_from_closes(closes), ZERO)
    assert decision.target_exposure == Decimal("0.5")
    fast_txt = decision.reason.split("=")[1].split(" ")[0]
    slow_txt = decision.reason.split("=")[2].split(",")[0]
    assert fast_txt != slow_txt


def test_decide_when_more_candles_than_needed_then_only_the_last_slow_are_used() -> None:
    strategy = SmaCross(fast=2, slow=3)
    tail = [100, 101, 102]
    assert strategy.decide(candles_from_closes([1] * 50 + tail), ZERO) == strategy.decide(
        candles_from_closes(tail), ZERO
    )


@settings(max_examples=200, deadline=None)
@given(
    closes=st.lists(st.decimals(min_value="0.01", max_value="100000", places=2), min_size=20, max_size=40),
    fast=st.integers(min_value=1, max_value=9),
    extra=st.integers(min_value=1, max_value=10),
)
def test_decide_when_any_closes_then_target_matches_the_sma_comparison(
    closes: list[Decimal], fast: int, extra: int
) -> None:
    slow = fast + extra
    decision = SmaCross(fast=fast, slow=slow, exposure="0.25").decide(candles_from_closes(closes), ZERO)
    fast_sma = sum(closes[-fast:], ZERO) / fast
    slow_sma = sum(closes[-slow:], ZERO) / slow
    assert decision.target_exposure == (Decimal("0.25") if fast_sma > slow_sma else ZERO)
    assert isinstance(decision.target_exposure, Decimal)


# -- parameters ---------------------------------------------------------------------------


def test_init_when_no_params_then_documented_defaults() -> None:
    strategy = SmaCross()
    assert (strategy.fast, strategy.slow, strategy.exposure) == (5, 20, Decimal("0.5"))
    assert strategy.warmup == 20
    assert SmaCross.name == "sma_cross"


def test_params_when_validated_then_json_serialisable_and_lossless() -> None:
    strategy = SmaCross(fast="3", slow=8, exposure=0.1)
    assert strategy.params == {"fast": 3, "slow": 8, "exposure": "0.1"}
    assert json.loads(json.dumps(strategy.params)) == strategy.params
    assert SmaCross(**strategy.params).params == strategy.params
    assert strategy.exposure == Decimal("0.1")


def test_init_when_unknown_param_then_validation_error_on_params() -> None:
    with pytest.raises(ValidationError) as excinfo:
        SmaCross(fast=3, sloow=10)
    assert excinfo.value.field == "params"
    assert "sloow" in excinfo.value.message


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"fast": 0}, "fast"),
        ({"fast": -3}, "fast"),
        ({"fast": 2.5}, "fast"),
        ({"fast": "five"}, "fast"),
        ({"fast": True}, "fast"),
        ({"fast": None}, "fast"),
        ({"slow": 10_000}, "slow"),
        ({"fast": 20, "slow": 20}, "slow"),
        ({"fast": 30, "slow": 20}, "slow"),
        ({"exposure": 0}, "exposure"),
        ({"exposure": "-0.1"}, "exposure"),
        ({"exposure": "1.01"}, "exposure"),
        ({"exposure": "abc"}, "exposure"),
        ({"exposure": float("nan")}, "exposure"),
        ({"exposure": "Infinity"}, "exposure"),
        ({"exposure": False}, "exposure"),
        ({"exposure": [0.5]}, "exposure"),
    ],
)
def test_init_when_param_invalid_then_validation_error_names_the_param(params: dict, field: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        SmaCross(**params)
    assert excinfo.value.field == field


def test_init_when_exposure_is_one_then_accepted() -> None:
    assert SmaCross(exposure=1).exposure == Decimal(1)


# -- Decision -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [Decimal("-0.1"), Decimal("1.5"), Decimal("NaN"), 0.5])
def test_decision_when_target_outside_zero_to_one_then_refused(target: object) -> None:
    # A buggy strategy must not turn into an order.
    with pytest.raises(ValueError):
        Decision(target, "bad")  # type: ignore[arg-type]


def test_decision_when_reason_empty_then_refused() -> None:
    with pytest.raises(ValueError):
        Decision(Decimal("0.5"), "")


# -- load_strategy --------------------------------------------------------------------------


def test_load_strategy_when_path_valid_then_configured_instance() -> None:
    strategy = load_strategy("trading.strategies.sma_cross.SmaCross", {"fast": 3, "slow": 9})
    assert isinstance(strategy, SmaCross)
    assert strategy.params == {"fast": 3, "slow": 9, "exposure": "0.5"}


def test_load_strategy_when_params_none_then_defaults() -> None:
    assert load_strategy("trading.strategies.sma_cross.SmaCross", None).params["slow"] == 20


@pytest.mark.parametrize(
    "path",
    [
        "trading.strategies.no_such_module.SmaCross",  # module missing
        "no_such_package.Strategy",  # top-level package missing
        "trading.strategies.sma_cross.NoSuchClass",  # attribute missing
        "decimal.Decimal",  # importable but not a Strategy
        "trading.strategies.sma_cross._ZERO",  # not even a class
        "trading.strategies.base.Strategy",  # abstract
        "SmaCross",  # no module part
        "",
        "trading..sma_cross.SmaCross",
        "trading.strategies.sma_cross.SmaCross()",
    ],
)
def test_load_strategy_when_path_not_a_strategy_then_validation_error_on_strategy(path: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        load_strategy(path, {})
    assert excinfo.value.field == "strategy"


def test_load_strategy_when_params_invalid_then_validation_error_names_the_param() -> None:
    with pytest.raises(ValidationError) as excinfo:
        load_strategy("trading.strategies.sma_cross.SmaCross", {"fast": 0})
    assert excinfo.value.field == "fast"


@pytest.mark.parametrize("params", [[("fast", 3)], "fast=3", {1: 3}])
def test_load_strategy_when_params_not_an_object_then_validation_error_on_params(params: object) -> None:
    with pytest.raises(ValidationError) as excinfo:
        load_strategy("trading.strategies.sma_cross.SmaCross", params)  # type: ignore[arg-type]
    assert excinfo.value.field == "params"


def test_load_strategy_when_module_breaks_on_its_own_import_then_error_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deployment bug (missing dependency) must not be reported as a typo in the path.
    (tmp_path / "tw_broken_strategy_mod.py").write_text("import tw_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError):
        load_strategy("tw_broken_strategy_mod.Anything", {})


def test_load_strategy_when_custom_subclass_then_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tw_custom_strategy_mod.py").write_text(
        "from decimal import Decimal\n"
        "from trading.strategies.base import Decision, Strategy\n"
        "class AlwaysFlat(Strategy):\n"
        "    name = 'always_flat'\n"
        "    warmup = 0\n"
        "    def decide(self, candles, position_qty):\n"
        "        return Decision(Decimal(0), 'always flat')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    strategy = load_strategy("tw_custom_strategy_mod.AlwaysFlat", None)
    assert isinstance(strategy, Strategy)
    assert strategy.params == {}
    with pytest.raises(ValidationError) as excinfo:
        load_strategy("tw_custom_strategy_mod.AlwaysFlat", {"anything": 1})
    assert excinfo.value.field == "params"
