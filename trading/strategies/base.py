"""What a strategy is: closed candles in, a target exposure and its reason out.

Pure Python on purpose (no Django): the same class runs in the Celery tick and in backtests,
so a backtest exercises exactly the code that trades. A strategy sizes nothing and sends
nothing; it says what fraction of the agent's capital it wants in the symbol and why, and the
order layer turns the difference with the current position into an order.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, ClassVar

from tinywindow.exceptions import ValidationError
from trading.feeds.base import Candle

__all__ = ["Decision", "Param", "Strategy", "load_strategy"]

ParamValue = int | Decimal | bool | str
JSONValue = int | bool | str


@dataclass(frozen=True)
class Decision:
    """What the strategy wants now.

    `target_exposure` is the fraction (0..1; spot, long only) of the agent's capital to hold in
    the symbol, or None for "no opinion, change nothing" (e.g. still warming up). `reason` is a
    sentence with the numbers that drove the decision; it is stored with the order so a human
    can audit why the system traded.
    """

    target_exposure: Decimal | None
    reason: str

    def __post_init__(self) -> None:
        # A strategy bug must not become an order: refuse out-of-range targets here, once.
        if self.target_exposure is not None:
            if not isinstance(self.target_exposure, Decimal) or not self.target_exposure.is_finite():
                raise ValueError(f"target_exposure must be a finite Decimal or None, got {self.target_exposure!r}")
            if not Decimal(0) <= self.target_exposure <= Decimal(1):
                raise ValueError(f"target_exposure must be within 0..1 (spot, long only), got {self.target_exposure}")
        if not isinstance(self.reason, str) or not self.reason:
            raise ValueError("a Decision needs a non-empty reason")


@dataclass(frozen=True)
class Param:
    """Declaration of one strategy parameter: its default, type and allowed range.

    `kind` is int, Decimal, bool or str. Bounds apply to int and Decimal; `exclusive_minimum`
    turns `minimum` into a strict bound (e.g. an exposure must be > 0).
    """

    default: ParamValue
    kind: type = int
    minimum: int | Decimal | None = None
    maximum: int | Decimal | None = None
    exclusive_minimum: bool = False
    help: str = ""


class Strategy(ABC):
    """Base class of every strategy.

    Subclasses declare `name` and `param_specs`, implement `warmup` and `decide`, and may
    override `check_params` for rules that involve several parameters. Instances are cheap and
    hold no market state: everything `decide` needs arrives in its arguments, which keeps live
    ticks and backtests identical and makes a restarted worker behave like the one it replaced.
    (A `target_at` override may memoise running sums over the series it is replaying; that
    memo never changes an answer, only how fast it comes.)
    """

    name: ClassVar[str]
    param_specs: ClassVar[Mapping[str, Param]] = MappingProxyType({})

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.param_specs))
        if unknown:
            known = ", ".join(self.param_specs) or "none"
            raise ValidationError(
                f"unknown parameter(s) for {self.name}: {', '.join(unknown)} (known: {known})", field="params"
            )
        values: dict[str, ParamValue] = {}
        for key, spec in self.param_specs.items():
            values[key] = _coerce(key, params.get(key, spec.default), spec)
        self.check_params(values)
        self.values: Mapping[str, ParamValue] = MappingProxyType(values)
        # JSON form (Decimal as string, exact) so the agent's stored params round-trip losslessly.
        self.params: dict[str, JSONValue] = {k: str(v) if isinstance(v, Decimal) else v for k, v in values.items()}

    def check_params(self, values: Mapping[str, ParamValue]) -> None:
        """Cross-parameter rules; raise ValidationError(field=<param>) on failure."""

    @property
    @abstractmethod
    def warmup(self) -> int:
        """How many closed candles `decide` needs before it can have an opinion."""

    @abstractmethod
    def decide(self, candles: Sequence[Candle], position_qty: Decimal) -> Decision:
        """The target exposure given closed candles (oldest first) and the current position."""

    def target_at(self, candles: Sequence[Candle], index: int, position_qty: Decimal) -> Decimal | None:
        """What `decide` targets at bar `index` of a whole series, seeing what a live tick sees.

        A live tick passes the last `warmup + 1` closed candles, so this passes the same window.
        The backtester calls it for every bar in order; a subclass may override it with an
        incremental computation (running sums, no reason string) as long as it returns exactly
        `decide(...).target_exposure` — tests/unit/test_backtest.py checks that on every bar.
        A bar that trades still goes through `decide` itself, for the order's reason.
        """
        start = max(0, index - self.warmup)
        return self.decide(candles[start : index + 1], position_qty).target_exposure

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def _coerce(key: str, value: Any, spec: Param) -> ParamValue:
    """Validate and normalise one parameter value; errors name the parameter."""
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise ValidationError(f"{key} must be true or false, got {value!r}", field=key)
        return value
    if spec.kind is str:
        if not isinstance(value, str):
            raise ValidationError(f"{key} must be a string, got {value!r}", field=key)
        return value
    if spec.kind is int:
        number: int | Decimal = _as_int(key, value)
    elif spec.kind is Decimal:
        number = _as_decimal(key, value)
    else:  # a declaration bug, not user input
        raise TypeError(f"unsupported Param kind {spec.kind!r} for {key}")
    _check_range(key, number, spec)
    return number


def _as_int(key: str, value: Any) -> int:
    # bool is an int subclass; `fast=True` is a typo, not 1. Strings of digits come from forms.
    if isinstance(value, bool):
        raise ValidationError(f"{key} must be an integer, got {value!r}", field=key)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", value):
        return int(value)
    raise ValidationError(f"{key} must be an integer, got {value!r}", field=key)


def _as_decimal(key: str, value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValidationError(f"{key} must be a number, got {value!r}", field=key)
    try:
        if isinstance(value, float):
            # JSON numbers arrive as floats; str() keeps 0.1 as 0.1, not 0.1000000000000000055...
            if not math.isfinite(value):
                raise InvalidOperation
            number = Decimal(str(value))
        elif isinstance(value, (int, str, Decimal)):
            number = Decimal(value.strip() if isinstance(value, str) else value)
        else:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise ValidationError(f"{key} must be a decimal number, got {value!r}", field=key) from None
    if not number.is_finite():
        raise ValidationError(f"{key} must be a finite number, got {value!r}", field=key)
    return number


def _check_range(key: str, number: int | Decimal, spec: Param) -> None:
    if spec.minimum is not None:
        if spec.exclusive_minimum and not number > spec.minimum:
            raise ValidationError(f"{key} must be > {spec.minimum}, got {number}", field=key)
        if not spec.exclusive_minimum and not number >= spec.minimum:
            raise ValidationError(f"{key} must be >= {spec.minimum}, got {number}", field=key)
    if spec.maximum is not None and not number <= spec.maximum:
        raise ValidationError(f"{key} must be <= {spec.maximum}, got {number}", field=key)


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def load_strategy(dotted_path: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """Instantiate the Strategy class at `dotted_path` (e.g. "trading.strategies.sma_cross.SmaCross").

    A path that does not name an importable Strategy subclass is a user error
    (ValidationError(field="strategy")). A module that exists but fails on its own imports is a
    deployment bug and propagates unchanged, so it is not mistaken for a typo in the path.
    Note that importing runs the module's top-level code: callers exposing this to untrusted
    input should restrict the allowed paths.
    """
    if not isinstance(dotted_path, str) or not _DOTTED.fullmatch(dotted_path):
        raise ValidationError(
            f"strategy must be a dotted path like 'package.module.Class', got {dotted_path!r}", field="strategy"
        )
    module_path, _, class_name = dotted_path.rpartition(".")
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_path == missing or module_path.startswith(missing + "."):
            raise ValidationError(f"strategy module {module_path!r} does not exist", field="strategy") from None
        raise
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValidationError(f"{module_path!r} has no attribute {class_name!r}", field="strategy")
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        raise ValidationError(f"{dotted_path!r} is not a Strategy subclass", field="strategy")
    if inspect.isabstract(cls):
        raise ValidationError(f"{dotted_path!r} is abstract and cannot be run", field="strategy")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ValidationError(f"params must be an object, got {type(params).__name__}", field="params")
    bad_keys = [k for k in params if not isinstance(k, str)]
    if bad_keys:
        raise ValidationError(f"parameter names must be strings, got {bad_keys!r}", field="params")
    factory: Callable[..., Strategy] = cls
    return factory(**params)
