"""Shared model field factories: one definition of what a price, a quantity and money are."""

from __future__ import annotations

from decimal import Decimal

from django.db import models

# 28 significant digits, 10 after the point: enough for BTC satoshis (8) and sub-cent prices.
MAX_DIGITS = 28
DECIMAL_PLACES = 10


def DecimalAmount(**kwargs) -> models.DecimalField:  # noqa: N802 - reads like a field class
    """A price, quantity or money amount: always `Decimal`, never float."""
    kwargs.setdefault("max_digits", MAX_DIGITS)
    kwargs.setdefault("decimal_places", DECIMAL_PLACES)
    return models.DecimalField(**kwargs)


ZERO = Decimal("0")
