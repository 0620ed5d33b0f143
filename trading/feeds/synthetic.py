"""A seeded, stateless synthetic market: realistic-looking prices with no network and no storage.

The price is a pure function P(seed, symbol, t). Nothing is generated "forward" from a previous
value, so any window can be queried in any order, from any process, and always gives the same
numbers: a backtest, the live paper agent and a test asserting on a candle all see one market.

    log P(t) = log(base price)
             + m(t) * sum_{k=2..13}  a_k * noise_k(t)     fast octaves, scaled by the vol regime
             +        sum_{k=14..24} a_k * noise_k(t)     slow octaves: the multi-day trend
             + shocks(t)                                  sparse jumps that decay over hours

`noise_k` is value noise: uniform [-1, 1] values hashed at grid points every 2**k seconds,
linearly interpolated. a_k = SIGMA * sqrt(2**k) gives Brownian-like scaling (the variance of a
move grows linearly with its horizon). The regime multiplier m(t) comes from a slow noise and is
continuous, so a regime change alters the volatility without making the price jump. It multiplies
only the fast octaves: scaling the slow ones too would turn a regime change into a large drift.

Hashing is splitmix64 on integers seeded from blake2b of the symbol. Python's `hash()` of a str
is randomised per process and must not be used here.
"""

from __future__ import annotations

import functools
import hashlib
import math
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from tinywindow.exceptions import ValidationError
from trading.feeds.base import (
    EPOCH,
    Candle,
    epoch_seconds,
    require_aware,
    timeframe_seconds,
)

__all__ = ["MAX_LIMIT", "SyntheticFeed"]

MAX_LIMIT = 10_000
"""Most candles one call returns: bounds the CPU of a single request. Page with `end` for more."""

_M64 = (1 << 64) - 1
_ODD = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: spreads consecutive integers over the hash input

# Octaves 2**2 s (4 s) .. 2**22 s (~49 days). Below 4 s nothing matters for >= 1 s candles.
_FAST_OCTAVES = range(2, 14)
_SLOW_OCTAVES = range(14, 23)
# Per sqrt(second) volatility of the log-price at horizons of hours and more: ~2.4 % a day in
# the normal regime.
_SIGMA = 7.0e-5
# Below ~2 h the fast octaves shrink faster than Brownian (amplitude ~ spacing ** 0.75, a Hurst
# exponent > 0.5): short-horizon moves persist a little, like order-flow momentum. Measured with
# SmaCross(5, 20) on 5 s candles: ~29 crossings an hour instead of ~42 for pure Brownian noise,
# with 1 min moves of ~4 bps.
_FAST_HURST = 0.75

# Volatility regime: r(t) in [-1, 1] from two slow octaves (2.3 h and 9 h); m = 2 ** (1.6 r).
_REGIME_OCTAVES = ((13, 0.6), (15, 0.4))
_REGIME_GAIN = 1.6
_CALM_BELOW = 0.7
_TURBULENT_ABOVE = 1.5

# Shocks: each 2**12 s (~68 min) cell holds a jump with this probability, at a hashed instant,
# of 0.4 % .. 2 % (times sqrt(m)), decaying as (1 - dt/L)**2 over L = 2 .. 6 hours. The decay
# reaches exactly zero at L, so there is no truncation step in the price.
_SHOCK_CELL = 1 << 12
_SHOCK_PROBABILITY = 0.05
_SHOCK_MIN, _SHOCK_SPAN = 0.004, 0.016
_SHOCK_LIFE_MIN, _SHOCK_LIFE_SPAN = 2 * 3600.0, 4 * 3600.0
_SHOCK_LOOKBACK_CELLS = int((_SHOCK_LIFE_MIN + _SHOCK_LIFE_SPAN) // _SHOCK_CELL) + 1

# Interior samples (fractions of the candle) for high/low, besides open and close.
_INTERIOR = (0.25, 0.5, 0.75)

_KNOWN_BASES = {
    "BTC/USDT": 60000.0,
    "ETH/USDT": 3000.0,
    "SOL/USDT": 150.0,
}

# Hash streams: independent random sequences derived from one symbol key.
_STREAM_NOISE = 1
_STREAM_REGIME = 2
_STREAM_SHOCK = 3
_STREAM_VOLUME = 4
_STREAM_SYMBOL = 5

_VOLUME_QUANTUM = Decimal("0.0001")
# Earliest open time representable as a datetime (0001-01-01 UTC); earlier would overflow.
_FIRST_SECOND = -62_135_596_800


def _splitmix64(x: int) -> int:
    """One splitmix64 step: a cheap, well-mixed 64-bit integer hash, identical in every process."""
    x = (x + _ODD) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _unit(h: int) -> float:
    """A 64-bit hash as a uniform float in [0, 1)."""
    return (h >> 11) * (1.0 / (1 << 53))


def _signed(h: int) -> float:
    """A 64-bit hash as a uniform float in [-1, 1)."""
    return (h >> 11) * (2.0 / (1 << 53)) - 1.0


def _stream_key(symbol_key: int, stream: int, index: int = 0) -> int:
    return _splitmix64(symbol_key ^ _splitmix64((stream << 32) ^ index))


def _amplitude(k: int) -> float:
    """Amplitude of octave k: Brownian above the fast/slow split, smoother (Hurst 0.75) below."""
    pivot = _SLOW_OCTAVES.start - 1
    if k >= pivot:
        return _SIGMA * math.sqrt(1 << k)
    return _SIGMA * math.sqrt(1 << pivot) * 2.0 ** ((k - pivot) * _FAST_HURST)


def _price_quantum(base: float) -> Decimal:
    """Tick size from the symbol's base price: cents above 100, finer for small prices.

    It is per symbol, not per price, so all fields of one candle share a quantum and quantising
    (a monotonic map) cannot break low <= open, close <= high.
    """
    if base >= 100:
        return Decimal("0.01")
    if base >= 1:
        return Decimal("0.0001")
    return Decimal("0.00000001")


class _Path:
    """The price function of one (seed, symbol), with grid-value memos for a single query.

    Created per call and thrown away: the memos only save re-hashing grid points shared by
    neighbouring samples (a 200-candle window touches a few hundred points, not thousands),
    they never carry anything from one query to the next.
    """

    __slots__ = ("_log_base", "_memo", "_noise_keys", "_regime_keys", "_shock_key", "_shock_memo")

    def __init__(self, symbol_key: int, log_base: float) -> None:
        self._log_base = log_base
        self._noise_keys = [
            (k, 1.0 / (1 << k), _amplitude(k), _stream_key(symbol_key, _STREAM_NOISE, k))
            for k in (*_FAST_OCTAVES, *_SLOW_OCTAVES)
        ]
        self._regime_keys = [
            (1.0 / (1 << k), weight, _stream_key(symbol_key, _STREAM_REGIME, k)) for k, weight in _REGIME_OCTAVES
        ]
        self._shock_key = _stream_key(symbol_key, _STREAM_SHOCK)
        self._memo: dict[tuple[int, int], float] = {}
        self._shock_memo: dict[int, tuple[float, float, float] | None] = {}

    def _grid(self, key: int, i: int) -> float:
        memo_key = (key, i)
        value = self._memo.get(memo_key)
        if value is None:
            value = _signed(_splitmix64(key ^ ((i * _ODD) & _M64)))
            self._memo[memo_key] = value
        return value

    def _noise(self, key: int, inv_spacing: float, t: float) -> float:
        x = t * inv_spacing
        i = math.floor(x)
        f = x - i
        v0 = self._grid(key, i)
        return v0 + (self._grid(key, i + 1) - v0) * f

    def regime_multiplier(self, t: float) -> float:
        r = 0.0
        for inv_spacing, weight, key in self._regime_keys:
            r += weight * self._noise(key, inv_spacing, t)
        return 2.0 ** (_REGIME_GAIN * r)

    def _shock(self, cell: int) -> tuple[float, float, float] | None:
        """(time, log size, lifetime) of the jump in `cell`, or None; a pure function of the cell."""
        if cell in self._shock_memo:
            return self._shock_memo[cell]
        h = _splitmix64(self._shock_key ^ ((cell * _ODD) & _M64))
        shock = None
        if _unit(h) < _SHOCK_PROBABILITY:
            h2 = _splitmix64(h)
            h3 = _splitmix64(h2)
            h4 = _splitmix64(h3)
            at = cell * _SHOCK_CELL + _unit(h2) * _SHOCK_CELL
            magnitude = _SHOCK_MIN + _SHOCK_SPAN * _unit(h3) ** 2
            sign = 1.0 if h4 & 1 else -1.0
            size = sign * magnitude * math.sqrt(self.regime_multiplier(at))
            life = _SHOCK_LIFE_MIN + _SHOCK_LIFE_SPAN * _unit(_splitmix64(h4))
            shock = (at, size, life)
        self._shock_memo[cell] = shock
        return shock

    def log_price(self, t: float) -> float:
        fast = 0.0
        slow = 0.0
        for k, inv_spacing, amplitude, key in self._noise_keys:
            x = t * inv_spacing
            i = math.floor(x)
            v0 = self._grid(key, i)
            term = amplitude * (v0 + (self._grid(key, i + 1) - v0) * (x - i))
            if k < _SLOW_OCTAVES.start:
                fast += term
            else:
                slow += term
        total = self._log_base + self.regime_multiplier(t) * fast + slow
        cell = math.floor(t / _SHOCK_CELL)
        for c in range(cell - _SHOCK_LOOKBACK_CELLS, cell + 1):
            shock = self._shock(c)
            if shock is not None:
                at, size, life = shock
                dt = t - at
                if 0.0 <= dt < life:
                    total += size * (1.0 - dt / life) ** 2
        return total

    def price(self, t: float) -> float:
        return math.exp(self.log_price(t))


class SyntheticFeed:
    """Deterministic fake market for paper trading, demos and backtests. Implements `Feed`.

    Same `seed` => same market, in any process and for any query order. Different seeds give
    unrelated markets, so tests can pin one and demos can vary it.
    """

    name = "synthetic"

    def __init__(self, seed: int = 42) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValidationError(f"seed must be an integer, got {seed!r}", field="seed")
        self.seed = seed
        self._seed_key = _splitmix64(seed & _M64)

    def __repr__(self) -> str:
        return f"SyntheticFeed(seed={self.seed})"

    # -- per-symbol constants (pure functions of seed and symbol) ---------------------------

    def _symbol_key(self, symbol: str) -> int:
        _require_symbol(symbol)
        digest = hashlib.blake2b(symbol.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return _splitmix64(self._seed_key ^ int.from_bytes(digest, "big"))

    @staticmethod
    def _base_price(symbol: str) -> float:
        """Known majors sit near their real price level; anything else gets a hashed 10..1000.

        The base deliberately ignores the seed, so a symbol trades at a familiar level under
        every seed; the seed changes the path, not the order of magnitude.
        """
        known = _KNOWN_BASES.get(symbol)
        if known is not None:
            return known
        digest = hashlib.blake2b(symbol.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        u = _unit(_splitmix64(int.from_bytes(digest, "big") ^ _STREAM_SYMBOL))
        return 10.0 * 100.0**u  # log-uniform in [10, 1000)

    def _path(self, symbol: str) -> tuple[_Path, Decimal, int]:
        key = self._symbol_key(symbol)
        base = self._base_price(symbol)
        return _Path(key, math.log(base)), _price_quantum(base), key

    # -- Feed --------------------------------------------------------------------------------

    def candles(self, symbol: str, timeframe: str, *, limit: int, end: datetime) -> list[Candle]:
        """The last `limit` closed candles with close time <= `end`, oldest first."""
        step = timeframe_seconds(timeframe)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError(f"limit must be an integer in 1..{MAX_LIMIT}, got {limit!r}", field="limit")
        end_s = epoch_seconds(require_aware(end, "end"))
        last_open = end_s - end_s % step - step
        first_open = last_open - (limit - 1) * step
        if first_open < _FIRST_SECOND:
            raise ValidationError(f"end {end.isoformat()} leaves no room for {limit} candles", field="end")

        _require_symbol(symbol)
        if limit <= _CACHED_LIMIT:
            return list(_recent_candles(self.seed, symbol, step, first_open, limit))
        return self._candles(symbol, step, first_open, limit)

    def _candles(self, symbol: str, step: int, first_open: int, limit: int) -> list[Candle]:
        path, quantum, key = self._path(symbol)
        volume_key = _stream_key(key, _STREAM_VOLUME, step)
        # Notional traded per second in the quote currency, per symbol: majors trade more.
        notional_per_s = 10_000.0 if symbol in _KNOWN_BASES else 200.0 + 4_800.0 * _unit(volume_key)

        out: list[Candle] = []
        open_price = path.price(float(first_open))
        for n in range(limit):
            t0 = first_open + n * step
            close_price = path.price(float(t0 + step))
            interior = [path.price(t0 + f * step) for f in _INTERIOR]
            high = max(open_price, close_price, *interior)
            low = min(open_price, close_price, *interior)

            # Volume: more in turbulent regimes (m ** 1.5) and on big moves, with hashed noise.
            m = path.regime_multiplier(t0 + 0.5 * step)
            move = abs(math.log(close_price / open_price)) / (_SIGMA * math.sqrt(step))
            noise = _signed(_splitmix64(volume_key ^ ((t0 * _ODD) & _M64)))
            volume = notional_per_s * step / close_price * m**1.5 * (1.0 + 0.3 * move) * math.exp(0.5 * noise)

            q_open = _quantize(open_price, quantum)
            q_close = _quantize(close_price, quantum)
            out.append(
                Candle(
                    ts=EPOCH + timedelta(seconds=t0),
                    open=q_open,
                    # max/min again after quantising: belt and braces for the OHLC invariant.
                    high=max(_quantize(high, quantum), q_open, q_close),
                    low=min(_quantize(low, quantum), q_open, q_close),
                    close=q_close,
                    volume=max(_quantize(volume, _VOLUME_QUANTUM), _VOLUME_QUANTUM),
                )
            )
            open_price = close_price
        return out

    def last_price(self, symbol: str, at: datetime) -> Decimal:
        """P(at), quantised to the symbol's tick; equals the close of a candle closing at `at`."""
        _require_symbol(symbol)
        return _price_at(self.seed, symbol, _timestamp(require_aware(at, "at")))

    def _price(self, symbol: str, t: float) -> Decimal:
        path, quantum, _ = self._path(symbol)
        return _quantize(path.price(t), quantum)

    def regime(self, symbol: str, at: datetime) -> str:
        """The volatility regime at `at`, for display: "calm", "normal" or "turbulent"."""
        t = _timestamp(require_aware(at, "at"))
        path, _, _ = self._path(symbol)
        m = path.regime_multiplier(t)
        if m < _CALM_BELOW:
            return "calm"
        if m > _TURBULENT_ABOVE:
            return "turbulent"
        return "normal"


def _require_symbol(symbol: object) -> None:
    """Checked before the caches below: an unhashable symbol must get this error, not a TypeError."""
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValidationError(f"symbol must be a non-empty string, got {symbol!r}", field="symbol")


# The feed is a pure function of (seed, symbol, time), so answers can be kept. One order on the
# paper venue asks for the same price three times and the same last candle twice, and every
# agent ticking in the same minute asks for the same closed candles: small windows (strategies'
# warm-ups, the venue's one candle) are kept, long ones (backtests, charts) are computed.
_CACHED_LIMIT = 64


@functools.lru_cache(maxsize=512)
def _recent_candles(seed: int, symbol: str, step: int, first_open: int, limit: int) -> tuple[Candle, ...]:
    return tuple(SyntheticFeed(seed)._candles(symbol, step, first_open, limit))


@functools.lru_cache(maxsize=256)
def _price_at(seed: int, symbol: str, t: float) -> Decimal:
    return SyntheticFeed(seed)._price(symbol, t)


def _timestamp(at: datetime) -> float:
    """Seconds since the epoch with microseconds, computed exactly before the one float step."""
    delta = at - EPOCH
    return (delta.days * 86400 + delta.seconds) + delta.microseconds / 1_000_000


def _quantize(value: float, quantum: Decimal) -> Decimal:
    # Through repr (shortest round-trip string), not Decimal(float): the exact binary expansion
    # would carry noise digits into rounding ties.
    return Decimal(repr(value)).quantize(quantum, rounding=ROUND_HALF_EVEN)
