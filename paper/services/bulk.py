"""Bulk operations of the paper venue, for the kill switch: cancel many orders at once.

One transaction for the whole batch: lock the open orders, give back what they hold in one
pass over the balances (locked in a fixed order: account, asset), close them with one
UPDATE. Cancelling 1,000 resting orders this way takes a handful of queries, not thousands.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone

from paper.models import PaperBalance, PaperOrder, PaperVenueOrder
from paper.services.balances import balance_release, balances_write
from tinywindow.fields import ZERO


def venue_orders_cancel(*, client_order_ids: list[str]) -> list[PaperVenueOrder]:
    """Cancel the open ones among these orders; returns every order found (with its trades)."""
    now = timezone.now()
    with transaction.atomic():
        open_orders = list(
            PaperVenueOrder.objects.select_for_update()
            .filter(client_order_id__in=client_order_ids, status=PaperVenueOrder.Status.OPEN).order_by("pk")
        )
        holds: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
        for order in open_orders:
            if order.locked_amount > 0 and order.locked_asset:
                holds[(order.account, order.locked_asset)] += order.locked_amount
        if holds:
            accounts = sorted({account for account, _ in holds})
            balances = [
                b for b in PaperBalance.objects.select_for_update()
                .filter(account__in=accounts, asset__in={asset for _, asset in holds}).order_by("account", "asset")
                if (b.account, b.asset) in holds
            ]
            for balance in balances:
                balance_release(balance, holds[(balance.account, balance.asset)])
            balances_write(balances, now=now)  # one timestamp with the orders it cancels
        PaperVenueOrder.objects.filter(pk__in=[o.pk for o in open_orders]).update(
            status=PaperVenueOrder.Status.CANCELLED, locked_amount=ZERO, updated_at=now)
    return list(
        PaperVenueOrder.objects.filter(client_order_id__in=client_order_ids)
        .prefetch_related(Prefetch("trades", queryset=PaperOrder.objects.order_by("id")))
    )
