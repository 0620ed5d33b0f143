"""Batch ticks: many agents per Celery task, for agents on slow timeframes (docs/scaling.md).

One task per agent per interval costs a broker round trip, a task dispatch, and a candle fetch
per agent; at 10,000 agents on a 60 s timeframe that is 167 tasks and 167 identical candle
reads a second. Agents whose `tick_seconds` is at least AGENT_TICK_BATCH_MIN_SECONDS are
therefore ticked differently:

- Each such agent is due once per interval at its own second, `phase = id % tick_seconds`
  into the interval, so the load is spread evenly instead of arriving on the minute.
- Beat runs `dispatch_agent_ticks` every second: `agent_ticks_dispatch` finds the agents whose
  due second has come since the last dispatch (a watermark per interval in Redis) and enqueues
  one `tick_agents` task per AGENT_TICK_BATCH_SIZE of them.
- `agents_tick_batch` claims its agents for that due time in one statement (an agent whose
  `last_tick_at` is already at or past it was ticked: a repeated delivery is a no-op), takes
  their per-agent tick locks in one Redis round trip, reads each (feed, symbol, timeframe)'s
  candles once for the batch, and runs the very same `agent_tick` per agent — same decisions,
  same pre-trade checks, orders named by (agent, symbol, due time) so no bar orders twice.

At most once per bar: an agent claimed by a batch that then dies is ticked again at its next
due time, as a per-agent tick that expired in the queue would be.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models.functions import Mod
from django.utils import timezone

from safety.services.stats import market_data_seen
from tinywindow.exceptions import TinyWindowError
from tinywindow.redis_client import get_redis
from trading.feeds import feed_for
from trading.feeds.base import Candle, timeframe_seconds
from trading.models import Agent, AgentStatus
from trading.services.agents import TickBook, TickResult, agent_tick

logger = logging.getLogger(__name__)

# The per-agent tick lock: trading.tasks.tick_agent takes it per tick, a batch for each of its agents.
TICK_LOCK_KEY = "tinywindow:lock:tick:{agent_id}"
DISPATCH_WATERMARK_KEY = "tinywindow:tick-dispatch:{tick_seconds}"
LOCK_SECONDS = 300


class BatchFeed:
    """One feed for the length of a batch: each (symbol, timeframe, closed bar) is read once.

    A feed answers "the last `limit` closed candles up to `end`", which depends only on the
    bar `end` falls in; so the longest read of that bar serves every shorter one, sliced, with
    exactly the candles a read of its own would give.
    """

    def __init__(self, feed: Any) -> None:
        self._feed = feed
        self._reads: dict[tuple[str, str, int], tuple[int, list[Candle] | Exception]] = {}
        self.fetches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._feed, name)

    def candles(self, symbol: str, timeframe: str, *, limit: int, end: datetime) -> list[Candle]:
        step = timeframe_seconds(timeframe)
        key = (symbol, timeframe, int(end.timestamp()) // step)
        read = self._reads.get(key)
        if read is None or read[0] < limit:
            self.fetches += 1
            try:
                read = (limit, self._feed.candles(symbol, timeframe, limit=limit, end=end))
            except TinyWindowError as exc:  # the feed's own errors: every agent of the batch sees the same
                read = (limit, exc)
            self._reads[key] = read
        got = read[1]
        if isinstance(got, Exception):
            raise got
        return got[-limit:]


class BatchTickBook(TickBook):
    """What `agent_tick` reads and records, for a whole batch in a handful of statements: the
    agents with their positions and open orders loaded up front (one query, `TickBook`), candles
    through one BatchFeed per feed, decisions and market-data freshness written once at the end
    (`flush`)."""

    def __init__(self, agent_ids: list[int]) -> None:
        super().__init__(agent_ids)
        self._feeds: dict[str, BatchFeed] = {}
        self._seen: dict[str, float] = {}
        self._records: list[tuple[int, datetime, str]] = []

    def agent(self, agent_id: int) -> Agent:
        try:
            return self._agents[agent_id]
        except KeyError:  # not in the batch: never loaded on its own
            raise Agent.DoesNotExist(f"agent {agent_id} does not exist") from None

    def feed(self, name: str) -> BatchFeed:
        if name not in self._feeds:
            self._feeds[name] = BatchFeed(feed_for(name))
        return self._feeds[name]

    def market_data_seen(self, *, symbol: str, candle_close_ts: float) -> None:
        self._seen[symbol] = max(candle_close_ts, self._seen.get(symbol, 0.0))

    def record(self, *, agent: Agent, now: datetime, decision: str) -> None:
        self._records.append((agent.pk, now, decision))

    @property
    def candle_reads(self) -> int:
        return sum(feed.fetches for feed in self._feeds.values())

    def flush(self) -> None:
        """Write the recorded decisions (forward only, as a single tick does) and the freshness."""
        for symbol, close_ts in self._seen.items():
            market_data_seen(symbol=symbol, candle_close_ts=close_ts)
        if not self._records:
            return
        ids, ats, decisions = zip(*self._records, strict=True)
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE agents AS a SET last_tick_at = v.at, last_decision = v.decision "
                "FROM (SELECT unnest(%s::bigint[]) AS id, unnest(%s::timestamptz[]) AS at, "
                "unnest(%s::text[]) AS decision) AS v "
                "WHERE a.id = v.id AND (a.last_tick_at IS NULL OR a.last_tick_at <= v.at)",
                [list(ids), list(ats), list(decisions)])
        self._records.clear()


@dataclass
class BatchTickResult:
    due: datetime
    ticked: dict[int, TickResult] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)  # agent id -> why it was not ticked
    errors: dict[int, str] = field(default_factory=dict)
    candle_reads: int = 0


def agents_tick_batch(*, agent_ids: list[int], due: datetime) -> BatchTickResult:
    """Tick each of `agent_ids` once for its due time `due` (see the module docstring)."""
    result = BatchTickResult(due=due)
    claimed_at = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE agents SET last_tick_at = %s WHERE id = ANY(%s) AND status = %s "
            "AND (last_tick_at IS NULL OR last_tick_at < %s) RETURNING id, name, feed",
            [claimed_at, list(agent_ids), AgentStatus.ACTIVE, due])
        claimed = cursor.fetchall()
    claimed_ids = {row[0] for row in claimed}
    for agent_id in agent_ids:
        if agent_id not in claimed_ids:
            result.skipped[agent_id] = "already ticked for this due time, not active, or gone"
    if not claimed:
        return result
    redis = get_redis()
    token = secrets.token_hex(8)
    pipe = redis.pipeline(transaction=False)
    for agent_id, _, _ in claimed:
        pipe.set(TICK_LOCK_KEY.format(agent_id=agent_id), token, nx=True, ex=LOCK_SECONDS)
    locked = [row for row, got in zip(claimed, pipe.execute(), strict=True) if got]
    for agent_id, _, _ in set(claimed) - set(locked):
        result.skipped[agent_id] = "a tick of this agent is still running"
    tick_id = f"due-{int(due.timestamp())}"
    book = None
    try:
        book = BatchTickBook([row[0] for row in locked])
        for agent_id, name, _ in locked:
            result.names[agent_id] = name
            try:
                result.ticked[agent_id] = agent_tick(agent_id=agent_id, now=timezone.now(), tick_id=tick_id,
                                                     book=book)
            except Agent.DoesNotExist:
                result.skipped[agent_id] = "gone"
            except TinyWindowError as exc:  # one agent's bad definition must not stop the others
                result.errors[agent_id] = str(exc)
                logger.error("batch tick for agent %s failed: %s", agent_id, exc, extra={"agent_id": agent_id})
    finally:
        try:
            if book is not None:
                book.flush()
                result.candle_reads = book.candle_reads
        finally:
            pipe = redis.pipeline(transaction=False)
            for agent_id, _, _ in locked:
                pipe.delete(TICK_LOCK_KEY.format(agent_id=agent_id))
            pipe.execute()
    return result


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def agent_ticks_due(*, tick_seconds: int, seconds: range) -> dict[int, list[int]]:
    """Batch-ticked agents with interval `tick_seconds` due in the epoch `seconds`: {due second: ids}."""
    by_phase = {second % tick_seconds: second for second in seconds}
    rows = (Agent.objects.filter(status=AgentStatus.ACTIVE, tick_seconds=tick_seconds)
            .annotate(phase=Mod("id", tick_seconds)).filter(phase__in=list(by_phase))
            .order_by("id").values_list("id", "phase"))
    due: dict[int, list[int]] = defaultdict(list)
    for agent_id, phase in rows:
        due[by_phase[phase]].append(agent_id)
    return due


def agent_ticks_dispatch(*, now: datetime | None = None, enqueue: Any = None) -> int:
    """Enqueue batch ticks for every batch-ticked agent whose due second came since the last
    dispatch (at most one interval back). Returns how many agents were enqueued.

    `enqueue(agent_ids, due, expires)` sends one batch (default: the `tick_agents` task).
    """
    if not settings.AGENT_TICK_BATCH_MIN_SECONDS:
        return 0
    if enqueue is None:
        from trading.tasks import tick_agents

        def enqueue(agent_ids: list[int], due: datetime, expires: int) -> None:
            tick_agents.apply_async(kwargs={"agent_ids": agent_ids, "due": due.isoformat()}, expires=expires)

    now_s = _epoch(now or timezone.now())
    redis = get_redis()
    intervals = (Agent.objects.filter(status=AgentStatus.ACTIVE,
                                      tick_seconds__gte=settings.AGENT_TICK_BATCH_MIN_SECONDS)
                 .order_by().values_list("tick_seconds", flat=True).distinct())
    size = settings.AGENT_TICK_BATCH_SIZE
    sent = 0
    for tick_seconds in intervals:
        key = DISPATCH_WATERMARK_KEY.format(tick_seconds=tick_seconds)
        last = redis.get(key)
        # First run: start with this second (no burst of every agent at once); after an outage
        # catch up at most one interval, each agent once.
        start = now_s if last is None else max(int(last) + 1, now_s - tick_seconds + 1)
        if start > now_s:
            continue
        for second, ids in sorted(agent_ticks_due(tick_seconds=tick_seconds, seconds=range(start, now_s + 1)).items()):
            due = datetime.fromtimestamp(second, UTC)
            for chunk in range(0, len(ids), size):
                enqueue(ids[chunk:chunk + size], due, tick_seconds)
            sent += len(ids)
        redis.set(key, now_s, ex=max(3600, 2 * tick_seconds))
    return sent
