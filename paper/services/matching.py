"""The paper venue's matching pass, and bringing the `orders` rows up to date with it.

Beat runs `paper.tasks.match_resting_orders` every PAPER_MATCH_SECONDS on the `execution`
queue. One pass:
1. the venue trades what can trade now — resting limit orders the market has reached (maker),
   the rest of partly filled orders (see `PaperVenue.match_open_orders`);
2. every open `orders` row whose venue order moved (more filled, or ended) is refreshed through
   the order service (`order_refresh`), so fills, the position, the order's status and the
   `paper_orders` PnL are written exactly as for an order filled at submission.

Step 2 looks at the venue's books, not only at what step 1 touched, so an order whose refresh
failed once (a crash between the two steps) is picked up by the next pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from paper.models import PaperVenueOrder
from tinywindow.exceptions import TinyWindowError

logger = logging.getLogger(__name__)


@dataclass
class MatchResult:
    traded: list[str] = field(default_factory=list)  # client ids the venue traded or ended in this pass
    refreshed: list[int] = field(default_factory=list)  # `orders` ids brought up to date
    failed: list[int] = field(default_factory=list)  # `orders` ids whose refresh failed (retried next pass)


def match_resting_orders(*, now: datetime | None = None) -> MatchResult:
    """Run one matching pass of the paper venue, then refresh the affected orders."""
    from trading.gateways import gateway_for

    paper_gateway = gateway_for("paper")
    result = MatchResult(traded=paper_gateway.match_open_orders(now=now or timezone.now()))
    for order_id, exchange in orders_behind_venue():
        try:
            _order_refresh(order_id, gateway=paper_gateway if exchange == "paper" else None)
        except TinyWindowError as exc:
            # A venue reached over HTTP (the local exchange) may be briefly unavailable: next pass.
            logger.warning("order %s not refreshed after matching: %s", order_id, exc, extra={"order_id": order_id})
            result.failed.append(order_id)
            continue
        result.refreshed.append(order_id)
    return result


def orders_behind_venue() -> list[tuple[int, str]]:
    """Open `orders` rows (id, exchange) whose venue order has filled more, or ended."""
    from trading.models import Order
    from trading.order_states import OrderStatus

    venue = PaperVenueOrder.objects.filter(client_order_id=OuterRef("client_order_id"))
    return list(
        Order.objects.filter(status__in=[OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED])
        .annotate(venue_filled=Subquery(venue.values("filled_quantity")[:1]),
                  venue_status=Subquery(venue.values("status")[:1]))
        .filter(venue_filled__isnull=False)
        .filter(~Q(venue_filled=F("filled_quantity")) | ~Q(venue_status=PaperVenueOrder.Status.OPEN))
        .order_by("id")
        .values_list("id", "exchange")
    )


def _order_refresh(order_id: int, *, gateway) -> None:
    from trading.services.orders import order_refresh

    order_refresh(order_id=order_id, gateway=gateway)
