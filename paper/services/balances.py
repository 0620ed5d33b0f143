"""Paper balances: seed an account once, lock and release what open orders hold, settle fills.

Rules the venue keeps (and the tests check):
- `free` and `locked` never go negative (also a database constraint);
- an asset's `locked` equals the sum of `locked_amount` of the account's open orders in it;
- a buy spends quote (price × quantity + fee) and receives base; a sell spends base and
  receives quote minus the fee. Fees are charged in the quote currency.

Rows are locked with `select_for_update` in one fixed order — the venue order first, then
the account's balances sorted by asset — so two matching passes never deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from django.db import IntegrityError, transaction

from paper.models import PaperAccount, PaperBalance
from tinywindow.fields import ZERO


def paper_account_seed(*, account: str, balances: Mapping[str, Decimal]) -> bool:
    """Create `account` funded with `balances`, unless it exists. True when created now.

    The account row is the guard: two concurrent first orders of one agent both try to
    create it, the unique name lets exactly one of them fund it.
    """
    if PaperAccount.objects.filter(name=account).exists():
        return False
    try:
        with transaction.atomic():
            PaperAccount.objects.create(name=account)
            for asset, amount in sorted(balances.items()):
                if amount < 0:
                    raise ValueError(f"cannot seed a negative balance: {asset} {amount}")
                PaperBalance.objects.create(account=account, asset=asset, free=amount)
    except IntegrityError:
        return False  # another process funded it first
    return True


def paper_balances(*, account: str) -> dict[str, PaperBalance]:
    """The account's balances by asset (read-only view; no locks)."""
    return {b.asset: b for b in PaperBalance.objects.filter(account=account)}


def balances_lock(*, account: str, assets: Iterable[str]) -> dict[str, PaperBalance]:
    """Lock (select_for_update) the account's rows for `assets`, creating empty ones first."""
    wanted = sorted(set(assets))
    for asset in wanted:
        PaperBalance.objects.get_or_create(account=account, asset=asset)
    rows = PaperBalance.objects.select_for_update().filter(account=account, asset__in=wanted).order_by("asset")
    return {b.asset: b for b in rows}


def balance_hold(balance: PaperBalance, amount: Decimal) -> None:
    """Move `amount` from free to locked (the caller checked that free covers it)."""
    if amount > balance.free:
        raise ValueError(f"{balance.account} holds only {balance.free} {balance.asset} free, not {amount}")
    balance.free -= amount
    balance.locked += amount


def balance_release(balance: PaperBalance, amount: Decimal) -> None:
    """Move `amount` back from locked to free (an order ended or traded less than it held)."""
    amount = min(amount, balance.locked)
    balance.locked -= amount
    balance.free += amount


def balance_spend(balance: PaperBalance, *, held: Decimal, amount: Decimal) -> Decimal:
    """Spend `amount`, first from what the order holds (`held`, part of locked), then from free.

    Returns how much of the order's hold was used, so the caller can lower `locked_amount`.
    """
    from_hold = min(held, amount, balance.locked)
    from_free = amount - from_hold
    if from_free > balance.free:
        raise ValueError(f"{balance.account} cannot pay {amount} {balance.asset}")
    balance.locked -= from_hold
    balance.free -= from_free
    return from_hold


def balance_credit(balance: PaperBalance, amount: Decimal) -> None:
    if amount < ZERO:
        raise ValueError("a credit cannot be negative")
    balance.free += amount
