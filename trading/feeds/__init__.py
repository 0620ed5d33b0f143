"""Pick a market-data feed by name."""

from __future__ import annotations

import functools

from django.conf import settings

from tinywindow.exceptions import ValidationError
from trading.feeds.base import Feed

FEED_NAMES = ("synthetic",)


@functools.cache
def feed_for(name: str) -> Feed:
    if name == "synthetic":
        from trading.feeds.synthetic import SyntheticFeed

        return SyntheticFeed(seed=settings.SYNTHETIC_FEED_SEED)
    raise ValidationError(f"unknown feed {name!r}; known: {', '.join(FEED_NAMES)}", field="feed")
