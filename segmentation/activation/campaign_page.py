"""A measured campaign as ``campaign_results`` rows and as a self-contained HTML page."""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

from segmentation.activation.measurement import ALL, Campaign, SegmentResult
from segmentation.activation.stats import Lift

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.warn{background:#fff4e5;padding:.5em 1em;border-left:4px solid #e80}
"""


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def rows(campaign: Campaign) -> list[tuple[Any, ...]]:
    """One row per segment (and the whole audience) and metric, in the contract's order."""
    measured = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    out = []
    for r in campaign.results:
        note = ",".join(r.notes) or None
        for lift in (r.conversion, r.revenue):
            mde = r.minimum_detectable if lift.metric == "conversion" else math.nan
            out.append((
                campaign.audience, campaign.launch, campaign.days, r.segment_id, r.segment_name,
                lift.metric, r.treatment.n, r.holdout.n, _num(lift.treatment),
                _num(lift.holdout), _num(lift.absolute), _num(lift.absolute_lower),
                _num(lift.absolute_upper), _num(lift.relative), _num(lift.relative_lower),
                _num(lift.relative_upper), _num(lift.incremental), _num(lift.incremental_lower),
                _num(lift.incremental_upper), _num(r.srm_p_value), _num(mde), note,
                campaign.run_id, measured,
            ))  # fmt: skip
    return out


def _fmt(x: float, pct: bool = False, points: bool = False) -> str:
    if x is None or math.isnan(x):
        return "-"
    if points:
        return f"{100 * x:+.2f} pp"
    return f"{x:+.2%}" if pct else f"{x:,.2f}"


def _interval(low: float, high: float, pct: bool = False, points: bool = False) -> str:
    return f"[{_fmt(low, pct, points)}, {_fmt(high, pct, points)}]"


def _verdict(lift: Lift) -> str:
    low, high = lift.absolute_lower, lift.absolute_upper
    if math.isnan(low) or math.isnan(high):
        return "not measurable"
    if low > 0:
        return "lift"
    return "harm" if high < 0 else "no clear effect"


def _row(r: SegmentResult, lift: Lift) -> str:
    conversion = lift.metric == "conversion"
    value = (lambda x: f"{x:.2%}") if conversion else (lambda x: f"{x:,.2f}")
    cells = [
        "All segments" if r.segment_name == ALL else f"{r.segment_id} {r.segment_name}",
        f"{r.treatment.n:,}", f"{r.holdout.n:,}",
        "-" if math.isnan(lift.treatment) else value(lift.treatment),
        "-" if math.isnan(lift.holdout) else value(lift.holdout),
        _fmt(lift.absolute, points=conversion),
        _interval(lift.absolute_lower, lift.absolute_upper, points=conversion),
        _fmt(lift.relative, True), _interval(lift.relative_lower, lift.relative_upper, True),
        _fmt(lift.incremental), _verdict(lift),
        "-" if math.isnan(r.srm_p_value) else f"{r.srm_p_value:.3g}",
        ", ".join(r.notes) or "",
    ]  # fmt: skip
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


def _table(campaign: Campaign, metric: str, title: str) -> str:
    head = ("Segment", "Treated", "Held out", "Treated value", "Held-out value",
            "Lift (conversion: percentage points)",
            "95% interval", "Relative lift", "95% interval", "Incremental", "Reading",
            "SRM p", "Notes")  # fmt: skip
    body = "".join(
        _row(r, r.conversion if metric == "conversion" else r.revenue) for r in campaign.results
    )
    header = "".join(f"<th>{h}</th>" for h in head)
    return (f"<h2>{title}</h2><table id='{metric}'><thead><tr>{header}</tr></thead>"
            f"<tbody>{body}</tbody></table>")  # fmt: skip


def render(campaign: Campaign) -> str:
    """The page: the campaign, its warnings, then one table per metric."""
    c = campaign
    warnings = "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in c.warnings)
    flagged = [r.segment_name for r in c.results if "sample_ratio_mismatch" in r.notes]
    if flagged:
        warnings += (
            f"<p class='warn'>Sample-ratio mismatch in {html.escape(', '.join(flagged))}: the "
            "split differs from the configured shares; do not trust these lifts until the "
            "assignment is explained.</p>"
        )
    intro = (
        f"<p>Audience <b>{html.escape(c.audience)}</b>, launched {c.launch}, measured over "
        f"{c.days} days (to {c.launch + dt.timedelta(days=c.days)}; events end "
        f"{c.last_event_day}). Groups as built on {c.scored_as_of}; expected held-out share "
        f"{c.expected_holdout:.1%}. Conversion: an order in the window (Newcombe hybrid score "
        "and Katz log intervals); revenue per customer: orders minus returns (Welch and delta "
        f"method). MLflow run {html.escape(c.run_id)}.</p>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Campaign {html.escape(c.audience)} {c.launch}</title><style>{_STYLE}</style>"
        f"</head><body><h1>Campaign results: {html.escape(c.audience)}</h1>{intro}{warnings}"
        f"{_table(c, 'conversion', 'Conversion')}"
        f"{_table(c, 'revenue_per_customer', 'Revenue per customer')}</body></html>"
    )
