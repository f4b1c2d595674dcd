"""The customer-value report: one self-contained HTML page per fit, with the backtest's
pictures (calibration frequency vs holdout, cumulative tracking), the parameters with their
standard errors, the base's totals and each segment's value."""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from segmentation.config import ValueConfig
from segmentation.explain import pictures as pics
from segmentation.value.backtest import Backtest
from segmentation.value.fitting import FittedValue
from segmentation.value.segments import SegmentValue, Totals

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0 1em 1em 0; } img { max-width: 36em; }
.flag { color: #a33; } .meta { color: #666; }
"""


@dataclass(frozen=True)
class ValueReport:
    """What the value report shows."""

    model_name: str
    model_version: int
    run_id: str
    as_of: dt.date
    fitted: FittedValue
    backtest: Backtest | None
    totals: Totals
    by_segment: Mapping[str, Sequence[SegmentValue]]
    notes: Sequence[str]


def calibration_png(checked: Backtest) -> bytes:
    """Mean holdout purchases by calibration frequency, actual against predicted."""
    plt = pics.pyplot()
    rows = checked.by_frequency
    fig, ax = plt.subplots(figsize=(6, 3.8))
    xs = list(range(len(rows)))
    ax.plot(xs, [r["actual"] for r in rows], marker="o", label="actual")
    ax.plot(xs, [r["predicted"] for r in rows], marker="s", linestyle="--", label="predicted")
    ax.set_xticks(xs, labels=[r["x"] for r in rows])
    ax.set(xlabel="repeat purchases in calibration (x)", ylabel="mean purchases in holdout",
           title="Calibration frequency vs holdout")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    return pics.png(fig)


def tracking_png(checked: Backtest) -> bytes:
    """Cumulative repeat purchases over calendar time, actual against expected."""
    plt = pics.pyplot()
    rows = checked.tracking
    fig, ax = plt.subplots(figsize=(7, 3.8))
    xs = [dt.date.fromisoformat(r["period_end"]) for r in rows]
    ax.plot(xs, [r["actual"] for r in rows], label="actual")
    ax.plot(xs, [r["expected"] for r in rows], linestyle="--", label="model")
    if checked.calibration_end is not None:
        ax.axvline(checked.calibration_end, color="grey", linestyle=":", label="calibration end")
    ax.set(ylabel="cumulative repeat purchases", title="Tracking: cumulative repeat purchases")
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    return pics.png(fig)


def pictures(checked: Backtest | None) -> dict[str, bytes]:
    """The backtest's pictures (none when it was skipped)."""
    if checked is None or checked.skipped is not None or not checked.by_frequency:
        return {}
    return {"value_calibration_holdout": calibration_png(checked),
            "value_tracking": tracking_png(checked)}  # fmt: skip


def _e(value: object) -> str:
    return html.escape(str(value))


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "&ndash;"
    return f"{value:,.{digits}f}"


def _parameters(fitted: FittedValue) -> str:
    rows = "".join(
        f"<tr><td>{_e(fit.model)}</td><td>{_e(k)}</td><td class=num>{_num(v, 4)}</td>"
        f"<td class=num>{_num(fit.std_errors[k], 4)}</td></tr>"
        for fit in (fitted.counts, fitted.spend) for k, v in fit.estimates.items()
    )  # fmt: skip
    ll = "".join(
        f"<tr><td>{_e(f.model)}</td><td>log-likelihood</td><td class=num>"
        f"{_num(f.log_likelihood, 1)}</td><td></td></tr>"
        for f in (fitted.counts, fitted.spend)
    )
    return (
        '<table id="parameters"><thead><tr><th>model</th><th>parameter</th><th>estimate</th>'
        f"<th>std. error</th></tr></thead><tbody>{rows}{ll}</tbody></table>"
    )


def _backtest(checked: Backtest | None) -> str:
    if checked is None or checked.skipped is not None:
        return f"<p>No backtest: {_e(checked.skipped if checked else 'not run')}.</p>"
    rows = "".join(
        f"<tr><td>{_e(r['x'])}</td><td class=num>{r['customers']:,}</td><td class=num>"
        f"{_num(r['actual'])}</td><td class=num>{_num(r['predicted'])}</td></tr>"
        for r in checked.by_frequency
    )
    corr = "&ndash;" if checked.correlation is None else f"{checked.correlation:.3f}"
    return (
        f"<p>Calibration to {checked.calibration_end}, holdout of {checked.holdout_periods:g} "
        f"periods: {checked.customers:,} customers made {checked.actual:,.0f} purchases; "
        f"the model predicted {checked.predicted:,.1f} (mean absolute error "
        f"{checked.mean_absolute_error:.3f}, correlation {corr}).</p>"
        '<table id="calibration"><thead><tr><th>calibration x</th><th>customers</th>'
        "<th>mean actual holdout</th><th>mean predicted</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _segments(by_segment: Mapping[str, Sequence[SegmentValue]]) -> str:
    if not by_segment:
        return "<p>No segmentation has published this date yet.</p>"
    parts = []
    for model, segs in by_segment.items():
        rows = "".join(
            f"<tr><td class=num>{s.segment_id}</td><td>{_e(s.segment_name)}</td><td class=num>"
            f"{s.customers:,}</td><td class=num>{_num(s.mean_clv)}</td><td class=num>"
            f"{_num(s.total_clv, 0)}</td><td class=num>{s.mean_p_alive:.2f}</td>"
            f"<td class=num>{s.share_of_value:.1%}</td></tr>"
            for s in segs
        )
        parts.append(
            f'<h3>{_e(model)}</h3><table class="segment-value"><thead><tr><th>id</th>'
            "<th>segment</th><th>customers</th><th>mean CLV</th><th>total CLV</th>"
            f"<th>mean P(alive)</th><th>share of value</th></tr></thead><tbody>{rows}</tbody>"
            "</table>"
        )
    return "".join(parts)


def render(
    data: ValueReport, vc: ValueConfig, drawn: Mapping[str, bytes], *, created: dt.datetime
) -> str:
    """The report as one HTML document (pictures embedded as base64 PNG)."""
    figures = "".join(
        f'<figure><img alt="{_e(n)}" src="data:image/png;base64,{base64.b64encode(p).decode()}">'
        f"<figcaption>{_e(n)}</figcaption></figure>"
        for n, p in drawn.items()
    )
    notes = "".join(f'<p class="flag">{_e(n)}</p>' for n in data.notes)
    t = data.totals
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Customer value: {_e(data.model_name)} v{data.model_version} as of {data.as_of}</title>
<style>{_CSS}</style></head><body>
<h1>Customer value: {_e(data.model_name)} version {data.model_version}</h1>
<p class="meta">As of {data.as_of} · {vc.model} and Gamma-Gamma · time unit {vc.time_unit} ·
horizon {vc.horizon_periods:g} · margin {vc.margin:.0%} · annual discount rate
{vc.discount_rate:.0%} · MLflow run <code>{_e(data.run_id)}</code> · generated
{created.replace(microsecond=0).isoformat()}</p>
{notes}
<h2>The base</h2>
<p>{t.customers:,} customers with a purchase: expected CLV {_num(t.clv, 0)} in total
({_num(t.mean_clv)} each), mean P(alive) {t.mean_p_alive:.2f}, {_num(t.expected_purchases, 0)}
expected purchases over the horizon.</p>
<h2>Value by segment</h2>
{_segments(data.by_segment)}
<h2>Parameters</h2>
{_parameters(data.fitted)}
<h2>Backtest</h2>
{_backtest(data.backtest)}
<div id="pictures">{figures}</div>
</body></html>
"""
