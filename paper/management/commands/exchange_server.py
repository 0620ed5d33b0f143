"""`python manage.py exchange_server --port 8765`: the local exchange as its own process.

Point TinyWindow's ccxt gateway at it with
    EXCHANGE_API_URL=http://127.0.0.1:8765 EXCHANGE_API_KEY=... EXCHANGE_API_SECRET=...
and an agent whose exchange is `binance`: orders then travel through ccxt, signed, over HTTP,
to the paper venue. The API key and secret come from the same variables (or the options);
when neither is set a pair is generated and printed once, with the lines to export.
"""

from __future__ import annotations

import os
import secrets
import signal
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from paper.exchange_server import LocalExchange, require_loopback
from tinywindow.cli import port_number, positive_seconds


def count_or_seconds(raw: str) -> float:
    """0 (never match) or a positive number of seconds."""
    return 0.0 if raw.strip() in ("0", "0.0") else positive_seconds(raw)


def _funding(values: list[str]) -> dict[str, Decimal]:
    funding = {}
    for item in values:
        asset, _, amount = item.partition("=")
        try:
            value = Decimal(amount)
        except InvalidOperation:
            value = None
        # A balance is a finite amount >= 0 of a named asset: NaN or -100 would poison every fill.
        if value is None or not value.is_finite() or value < 0 or not asset.strip().isalnum():
            raise CommandError(f"--fund takes ASSET=AMOUNT with an amount >= 0, got {item!r}", returncode=2)
        funding[asset.strip().upper()] = value
    return funding


class Command(BaseCommand):
    help = "Serve the paper venue over HTTP in Binance's spot REST dialect (the local exchange)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=port_number, default=8765)
        parser.add_argument("--api-key", default=os.environ.get("EXCHANGE_API_KEY", ""))
        parser.add_argument("--api-secret", default=os.environ.get("EXCHANGE_API_SECRET", ""))
        parser.add_argument("--account", default="local-exchange", help="paper account the key trades")
        parser.add_argument("--fund", action="append", default=[], metavar="ASSET=AMOUNT",
                            help="balance of a new account (repeatable; default USDT=100000)")
        parser.add_argument("--match-seconds", type=count_or_seconds, default=1.0,
                            help="how often resting orders are matched (0: never)")

    def handle(self, *args, **options):
        try:
            require_loopback(options["host"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        api_key, api_secret = options["api_key"], options["api_secret"]
        generated = not api_key and not api_secret
        if generated:
            api_key, api_secret = secrets.token_hex(16), secrets.token_hex(32)
        elif not api_key or not api_secret:
            raise CommandError("give both an API key and its secret (or neither, to generate a pair)")
        exchange = LocalExchange()
        exchange.add_api_key(api_key=api_key, secret=api_secret, account=options["account"],
                             balances=_funding(options["fund"]) or {"USDT": Decimal("100000")})
        try:
            server = exchange.serve(host=options["host"], port=options["port"],
                                    match_seconds=options["match_seconds"] or None)
        except OSError as exc:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {exc}") from exc
        self.stdout.write(f"Local exchange (Binance spot dialect) on {server.url}  account: {options['account']}")
        self.stdout.write(f"  export EXCHANGE_API_URL={server.url}")
        if generated:
            # Printed once, for this terminal only: paper money, loopback only.
            self.stdout.write(f"  export EXCHANGE_API_KEY={api_key} EXCHANGE_API_SECRET={api_secret}")
        self.stdout.flush()
        signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
        try:
            server.wait()
        except KeyboardInterrupt:
            server.stop()
        self.stdout.write("Local exchange stopped.")
