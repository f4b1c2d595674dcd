"""Summary of the customer-value job: the fits, the backtest, the base's value and each
segment's value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from segmentation.config import AppConfig
from segmentation.value.backtest import Backtest
from segmentation.value.fitting import FittedValue
from segmentation.value.segments import SegmentValue
from segmentation.workflows.summaries.common import fmt
from segmentation.workflows.value import ValueResult

_MODEL_LABEL = {"bg_nbd": "BG/NBD", "mbg_nbd": "MBG/NBD", "gamma_gamma": "Gamma-Gamma"}


def value(result: ValueResult, cfg: AppConfig) -> str:
    """The value run for the terminal."""
    vc, t = cfg.value, result.totals
    how = "fitted" if result.fitted is not None else f"scored with @{cfg.tracking.alias}"
    lines = [
        "",
        f"Customer value as of {result.as_of}: {result.model_name} version "
        f"{result.model_version} ({how}; {_MODEL_LABEL[vc.model]} + Gamma-Gamma, time unit "
        f"{vc.time_unit}, horizon {vc.horizon_periods:g})",
    ]
    if result.fitted is not None:
        lines += _fit_lines(result.fitted)
    if result.backtest is not None:
        lines += _backtest_lines(result.backtest, vc.time_unit)
    lines.append(
        f"  {t.customers:,} customers with a purchase: expected CLV {fmt(t.clv)} in total "
        f"({fmt(t.mean_clv)} each, margin {vc.margin:.0%}, discount {vc.discount_rate:.0%} a "
        f"year), mean P(alive) {t.mean_p_alive:.2f}, {fmt(t.expected_purchases)} expected "
        "purchases"
    )
    for flag, n in sorted(t.flags.items()):
        lines.append(f"  flagged {flag}: {n:,} customer(s)")
    lines += by_segment_lines(result.by_segment)
    lines += [f"  note: {n}" for n in result.notes]
    tables = ", ".join(f"{n} v{v}" for n, v in sorted(result.table_versions.items()))
    lines.append(f"Tables written: {tables}")
    if not result.promoted:
        lines.append(
            f"customer_value not written (tracking.promote=false): version "
            f"{result.model_version} is a candidate; promote it to {cfg.tracking.alias}."
        )
    for key in ("model_uri", "report"):
        if key in result.paths:
            lines.append(f"{'Model' if key == 'model_uri' else 'Report'}: {result.paths[key]}")
    return "\n".join(lines)


def _fit_lines(fitted: FittedValue) -> list[str]:
    lines = []
    for fit in (fitted.counts, fitted.spend):
        params = ", ".join(
            f"{k} {v:.4g} (se {fit.std_errors[k]:.2g})" for k, v in fit.estimates.items()
        )
        lines.append(
            f"  {_MODEL_LABEL[fit.model]}: {params}; log-likelihood {fit.log_likelihood:,.1f} "
            f"({fit.observations:,} customers)"
        )
    lines.append(
        f"  mean order value {fmt(fitted.model.population_order_value)}; correlation of "
        f"frequency and spend among {fitted.repeat_buyers:,} repeat buyers "
        f"{fitted.spend_frequency_correlation:.2f}"
    )
    return lines


def _backtest_lines(checked: Backtest, unit: str) -> list[str]:
    if checked.skipped is not None:
        return [f"  backtest skipped: {checked.skipped}"]
    corr = "-" if checked.correlation is None else f"{checked.correlation:.2f}"
    lines = [
        f"  backtest: calibration to {checked.calibration_end}, holdout {checked.holdout_periods:g}"
        f" {unit}s: {checked.actual:,.0f} purchases, predicted {checked.predicted:,.1f} "
        f"(MAE {checked.mean_absolute_error:.3f} per customer, correlation {corr})",
        f"    {'calibration x':>13} {'customers':>10} {'actual':>8} {'predicted':>9}",
    ]
    lines += [
        f"    {r['x']:>13} {r['customers']:>10,} {r['actual']:>8.2f} {r['predicted']:>9.2f}"
        for r in checked.by_frequency
    ]
    return lines


def by_segment_lines(by_segment: Mapping[str, Sequence[SegmentValue]]) -> list[str]:
    """Each segmentation's segments with their value, as a table per segmentation."""
    lines = []
    for model, segs in by_segment.items():
        lines += [
            f"  value by segment of {model}:",
            f"    {'id':>3}  {'segment':<32} {'customers':>9} {'mean CLV':>10} "
            f"{'total CLV':>12} {'P(alive)':>8} {'share':>6}",
        ]
        lines += [
            f"    {s.segment_id:>3}  {s.segment_name[:32]:<32} {s.customers:>9,} "
            f"{fmt(s.mean_clv):>10} {fmt(s.total_clv):>12} {s.mean_p_alive:>8.2f} "
            f"{s.share_of_value:>6.1%}"
            for s in segs
        ]
    return lines
