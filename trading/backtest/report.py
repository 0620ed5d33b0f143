"""A backtest's report: trades.csv, three PNG charts and one self-contained HTML page.

The HTML embeds the PNGs (base64) so it can be mailed or archived as one file; the PNGs are
also written beside it for slides and tickets. Charts are drawn with matplotlib's Agg backend
(no display needed); long series are reduced to a per-pixel min/max envelope first, so a
million-bar run plots in a second and no peak or trough disappears from the picture.
"""

from __future__ import annotations

import base64
import csv
import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from trading.analytics import PerformanceFigures
from trading.backtest.engine import BacktestResult

__all__ = ["ReportFiles", "figures_lines", "report_write", "trades_csv_write"]

_MAX_POINTS = 4000  # envelope buckets per chart: more than the pixels of a 12-inch figure
_HTML_TRADES = 500  # fills listed in the HTML; trades.csv has them all

TRADE_COLUMNS = ("order", "bar", "time", "side", "quantity", "price", "fee", "liquidity", "slippage_bps",
                 "realized_pnl", "position", "cash", "decision_bar", "reason")


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    trades_csv: Path
    images: tuple[Path, ...]


def _percent(value: Decimal | float | None) -> str:
    return "—" if value is None else f"{float(value) * 100:.2f}%"


def _ratio(value: Decimal | float | None) -> str:
    return "—" if value is None else f"{float(value):.3f}"


def figures_lines(figures: PerformanceFigures, *, capital: Decimal, final_equity: Decimal) -> list[tuple[str, str]]:
    """(label, value) pairs of the performance figures, as printed and as in the HTML."""
    return [
        ("final equity", f"{final_equity:,.2f} (capital {capital:,.2f})"),
        ("total PnL (closed trades)", f"{figures.total_pnl:,.2f}"),
        ("trades (orders that realized PnL)", str(figures.trades)),
        ("win rate", _percent(figures.win_rate)),
        ("profit factor", _ratio(figures.profit_factor)),
        ("Sharpe ratio (annualised)", _ratio(figures.sharpe_ratio)),
        ("Sortino ratio (annualised)", _ratio(figures.sortino_ratio)),
        ("max drawdown", _percent(figures.max_drawdown)),
        ("exposure time", _percent(figures.exposure_time)),
    ]


def trades_csv_write(result: BacktestResult, path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TRADE_COLUMNS)
        for f in result.fills:
            writer.writerow([f.order, f.bar, result.close_time(f.bar).isoformat(), f.side, f"{f.quantity:f}",
                             f"{f.price:f}", f"{f.fee:f}", f.liquidity, f"{f.slippage_bps:f}",
                             f"{f.realized_pnl:f}", f"{f.position:f}", f"{f.cash:f}", f.decision_bar,
                             result.reason(f.order)])
    return path


def _envelope(times: Sequence[datetime], values: Sequence[float]) -> tuple[list[datetime], list[float]]:
    """At most 2 * _MAX_POINTS points: each bucket's min and max, in time order."""
    n = len(values)
    if n <= 2 * _MAX_POINTS:
        return list(times), list(values)
    size = -(-n // _MAX_POINTS)
    xs: list[datetime] = []
    ys: list[float] = []
    for start in range(0, n, size):
        chunk = values[start : start + size]
        lo = min(range(len(chunk)), key=chunk.__getitem__)
        hi = max(range(len(chunk)), key=chunk.__getitem__)
        for k in sorted({lo, hi}):
            xs.append(times[start + k])
            ys.append(chunk[k])
    return xs, ys


def _charts(result: BacktestResult, directory: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    times = [result.close_time(i) for i in range(len(result.candles))]
    equity = [float(v) for v in result.equity]
    drawdown: list[float] = []
    peak = float("-inf")
    for value in equity:
        peak = max(peak, value)
        drawdown.append((value - peak) / peak * 100 if peak > 0 else 0.0)
    closes = [float(c.close) for c in result.candles]
    paths = []

    def save(fig, name: str) -> None:
        path = directory / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot(*_envelope(times, equity), color="#1f77b4", linewidth=0.8)
    ax.axhline(float(result.config.capital), color="grey", linewidth=0.6, linestyle="--", label="capital")
    ax.set_title(f"Equity — {title}")
    ax.set_ylabel(result.config.market.quote)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    save(fig, "equity.png")

    fig, ax = plt.subplots(figsize=(12, 3))
    xs, ys = _envelope(times, drawdown)
    ax.fill_between(xs, ys, 0, color="#d62728", alpha=0.4, linewidth=0)
    ax.set_title("Drawdown from peak equity (%)")
    ax.grid(alpha=0.3)
    save(fig, "drawdown.png")

    fig, ax = plt.subplots(figsize=(12, 5))
    ax.plot(*_envelope(times, closes), color="#444444", linewidth=0.7, label="close")
    for side, marker, color in (("buy", "^", "#2ca02c"), ("sell", "v", "#d62728")):
        marks = [(times[f.bar], float(f.price)) for f in result.fills if f.side == side]
        if marks:
            ax.scatter([m[0] for m in marks], [m[1] for m in marks], marker=marker, color=color, s=18,
                       label=f"{side} ({len(marks)})", zorder=3)
    ax.set_title(f"Trades on price — {result.config.symbol} {result.config.timeframe}")
    ax.set_ylabel(result.config.market.quote)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    save(fig, "trades.png")
    return paths


def report_write(result: BacktestResult, directory: Path, *, title: str,
                 run_facts: list[tuple[str, str]]) -> ReportFiles:
    """Write trades.csv, equity.png, drawdown.png, trades.png and report.html into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    trades_csv = trades_csv_write(result, directory / "trades.csv")
    images = _charts(result, directory, title)
    figures = result.figures()
    final = result.equity[-1] if result.equity else result.config.capital
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in [*run_facts, *figures_lines(figures, capital=result.config.capital,
                                                            final_equity=final)])
    pictures = "".join(
        f'<figure><img alt="{path.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode("ascii")}"></figure>'
        for path in images
    )
    listed = result.fills[:_HTML_TRADES]
    trade_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            f.order, result.close_time(f.bar).strftime("%Y-%m-%d %H:%M:%S"), f.side, f"{f.quantity:f}",
            f"{f.price:f}", f"{f.fee:f}", f"{f.realized_pnl:.2f}", result.reason(f.order))) + "</tr>"
        for f in listed
    )
    more = (f"<p>First {len(listed)} of {len(result.fills)} fills; all of them are in trades.csv.</p>"
            if len(result.fills) > len(listed) else "")
    rejected = (f"<p>{len(result.rejected)} order(s) refused by the venue's funds check, the first at bar "
                f"{result.rejected[0][0]}: {html.escape(result.rejected[0][1])}</p>" if result.rejected else "")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Backtest — {html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; font-size: 14px; }}
th {{ background: #f5f5f5; }}
img {{ max-width: 100%; }}
figure {{ margin: 1em 0; }}
</style></head><body>
<h1>Backtest — {html.escape(title)}</h1>
<table>{rows}</table>
{rejected}
{pictures}
<h2>Fills</h2>{more}
<table><tr><th>order</th><th>time (bar close)</th><th>side</th><th>quantity</th><th>price</th><th>fee</th>
<th>realized PnL</th><th>reason</th></tr>{trade_rows}</table>
</body></html>
"""
    html_path = directory / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return ReportFiles(html_path, trades_csv, tuple(images))
