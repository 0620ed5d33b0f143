"""The ccxt feed and download_candles over real HTTP, against the local exchange on 127.0.0.1
(paper/exchange_server.py speaks Binance's REST dialect; ccxt's own `binance` class talks to it).

The local exchange serves klines from a seeded synthetic market, so the venue's candles are
known exactly and the cache can be compared with them.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from paper.exchange_server import Fault, LocalExchange
from tests.factories import make_agent
from tests.helpers import manage
from tinywindow.embedded import find_free_port
from trading.feeds import feed_for
from trading.feeds.base import floor_time
from trading.feeds.ccxt_feed import CcxtFeed
from trading.feeds.health import feed_health
from trading.feeds.synthetic import SyntheticFeed
from trading.models import Candle as CandleRow
from trading.models import Order
from trading.services.agents import agent_tick

VENUE_SEED = 7
VENUE_MARKET = SyntheticFeed(seed=VENUE_SEED)
SENTINEL_VOLUME = Decimal("424242")


@pytest.fixture
def local_exchange(settings):
    exchange = LocalExchange(feed=VENUE_MARKET)
    server = exchange.serve(port=0)
    settings.EXCHANGE_API_URL = server.url
    yield exchange
    server.stop()


def _klines_requests(exchange: LocalExchange) -> int:
    return len(exchange.requests(method="GET", path="/api/v3/klines"))


def _stored(symbol: str = "BTC/USDT"):
    return CandleRow.objects.filter(exchange="binance", symbol=symbol, timeframe="1m").order_by("ts")


@pytest.mark.django_db
def test_candles_when_cache_empty_then_fetched_once_stored_and_equal_to_the_venue(local_exchange):
    now = timezone.now()
    candles = CcxtFeed("binance").candles("BTC/USDT", "1m", limit=30, end=now)
    assert candles == VENUE_MARKET.candles("BTC/USDT", "1m", limit=30, end=now)
    assert _stored().count() == 30
    assert _klines_requests(local_exchange) == 1
    # Asked again for the same window: the cache answers, the venue is not asked.
    assert CcxtFeed("binance").candles("BTC/USDT", "1m", limit=30, end=now) == candles
    assert _klines_requests(local_exchange) == 1


@pytest.mark.django_db
def test_candles_when_cache_behind_then_only_newer_candles_fetched(local_exchange):
    now = timezone.now()
    feed = CcxtFeed("binance")
    feed.candles("BTC/USDT", "1m", limit=30, end=now)
    rows = list(_stored())
    # Mark an old cached candle, and forget the newest five: the cache is now 5 minutes behind.
    _stored().filter(pk=rows[10].pk).update(volume=SENTINEL_VOLUME)
    _stored().filter(ts__gt=rows[-6].ts).delete()
    candles = feed.candles("BTC/USDT", "1m", limit=30, end=now)
    assert _klines_requests(local_exchange) == 2
    assert candles[-5:] == VENUE_MARKET.candles("BTC/USDT", "1m", limit=5, end=now)
    # The older candles were not fetched again (a re-fetch would have overwritten the mark).
    assert _stored().get(pk=rows[10].pk).volume == SENTINEL_VOLUME
    assert _stored().count() == 30


@pytest.mark.django_db
def test_candles_when_longer_history_wanted_then_only_the_older_part_fetched(local_exchange):
    now = timezone.now()
    feed = CcxtFeed("binance")
    feed.candles("BTC/USDT", "1m", limit=30, end=now)
    _stored().filter(ts=_stored().first().ts).update(volume=SENTINEL_VOLUME)
    candles = feed.candles("BTC/USDT", "1m", limit=50, end=now)
    assert len(candles) == 50 and _klines_requests(local_exchange) == 2
    assert candles[:20] == VENUE_MARKET.candles("BTC/USDT", "1m", limit=50, end=now)[:20]
    assert _stored().filter(volume=SENTINEL_VOLUME).count() == 1


@pytest.mark.django_db
def test_candles_when_venue_down_then_cache_served_and_health_says_stale(local_exchange):
    now = timezone.now()
    feed = CcxtFeed("binance")
    feed.candles("BTC/USDT", "1m", limit=30, end=now)
    _stored().filter(ts__gte=floor_time(now, "1m") - timedelta(minutes=10)).delete()
    local_exchange.faults.add(Fault(mode="503", count=None, path="/api/v3/klines"))
    candles = feed.candles("BTC/USDT", "1m", limit=30, end=now)
    assert len(candles) == 20  # what the cache still had
    health = feed_health(candles, "1m", now)
    assert health.stale and health.age_seconds > 540


@pytest.mark.django_db
def test_tick_when_agent_reads_ccxt_feed_then_decides_on_the_venue_candles(local_exchange):
    agent = make_agent(feed="ccxt:binance", timeframe="1m", params={"fast": 2, "slow": 4, "exposure": "0.5"})
    now = timezone.now()
    result = agent_tick(agent_id=agent.pk, now=now)
    assert result.unhealthy == []
    closes = [c.close for c in VENUE_MARKET.candles("BTC/USDT", "1m", limit=4, end=now)]
    fast, slow = sum(closes[-2:]) / 2, sum(closes) / 4
    assert ("hold 50% long" if fast > slow else "hold 0% (flat)") in result.decisions[0]
    assert Order.objects.count() == (1 if fast > slow else 0)
    assert feed_for("ccxt:binance").name == "ccxt:binance"


# -- download_candles ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_download_when_run_twice_then_second_run_fetches_nothing(local_exchange):
    since = (floor_time(timezone.now(), "1m") - timedelta(hours=2)).isoformat()
    out = StringIO()
    call_command("download_candles", exchange="binance", symbol="ETH/USDT", timeframe="1m", since=since,
                 no_progress=True, stdout=out)
    stored = _stored("ETH/USDT").count()
    assert stored in (120, 121)  # 121 when a new minute closed during the run
    assert f"downloaded {stored} ETH/USDT 1m candle(s) from binance in 1 request(s)" in out.getvalue()
    first = _stored("ETH/USDT").first()
    assert first.close == VENUE_MARKET.candles("ETH/USDT", "1m", limit=1, end=first.ts + timedelta(minutes=1))[0].close
    until = (_stored("ETH/USDT").last().ts + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    out = StringIO()
    call_command("download_candles", exchange="binance", symbol="ETH/USDT", timeframe="1m", since=since,
                 until=until, no_progress=True, stdout=out)
    assert "downloaded 0 ETH/USDT 1m candle(s) from binance in 0 request(s)" in out.getvalue()
    assert "(all already stored)" in out.getvalue()
    assert _klines_requests(local_exchange) == 1


@pytest.mark.django_db
def test_download_when_offline_or_input_bad_then_clear_command_errors(settings):
    settings.EXCHANGE_API_URL = f"http://127.0.0.1:{find_free_port()}"  # nothing listens there
    with pytest.raises(CommandError, match=r"cannot reach binance .*Offline\?") as info:
        call_command("download_candles", exchange="binance", symbol="BTC/USDT", timeframe="1m",
                     since="2024-01-01", until="2024-01-02", no_progress=True)
    assert info.value.returncode == 1
    for kwargs, expected in (
        ({"since": "yesterday"}, "is not a date"),
        ({"since": "2024-01-02", "until": "2024-01-01"}, "is not before"),
        ({"timeframe": "7m"}, "unknown timeframe"),
        ({"exchange": "nosuchvenue"}, "unknown exchange"),
    ):
        args = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "since": "2024-01-01",
                "until": "2024-01-02", "no_progress": True, **kwargs}
        with pytest.raises(CommandError, match=expected) as info:
            call_command("download_candles", **args)
        assert info.value.returncode == 2
    assert not CandleRow.objects.exists()


def test_download_command_when_run_as_a_user_then_progress_bar_and_candles_stored(worker_env, local_exchange,
                                                                                  settings):
    since = (floor_time(timezone.now(), "1m") - timedelta(hours=1)).isoformat()
    env = {**worker_env, "EXCHANGE_API_URL": settings.EXCHANGE_API_URL}
    result = manage("download_candles", "--exchange", "binance", "--symbol", "SOL/USDT", "--timeframe", "1m",
                    "--since", since, env=env)
    assert result.returncode == 0, result.stderr
    assert "binance SOL/USDT 1m" in result.stderr and "100%" in result.stderr  # tqdm's bar
    assert _stored("SOL/USDT").count() >= 60
    dead = {**env, "EXCHANGE_API_URL": f"http://127.0.0.1:{find_free_port()}"}
    result = manage("download_candles", "--exchange", "binance", "--symbol", "SOL/USDT", "--timeframe", "1m",
                    "--since", "2024-01-01", "--until", "2024-01-02", "--no-progress", env=dead)
    assert result.returncode == 1
    assert "cannot reach binance" in result.stderr and "Traceback" not in result.stderr

