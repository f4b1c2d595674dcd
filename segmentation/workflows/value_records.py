"""What a value run records and writes: MLflow params, metrics and artifacts, the parameter and
score rows, the totals, each segment's value, and the HTML report."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy
from pyspark.sql import DataFrame, SparkSession

from segmentation.config import AppConfig, join_path
from segmentation.explain import value_report
from segmentation.runtime import tracking
from segmentation.storage import files, tables
from segmentation.value import backtest, fitting, scoring, segments

REQUIREMENTS = (f"numpy=={np.__version__}", f"pandas=={pd.__version__}",
                f"scipy=={scipy.__version__}")  # fmt: skip


@dataclass(frozen=True)
class Champion:
    """The value model under the alias."""

    version: int
    run_id: str
    model: scoring.ValueModel


@dataclass
class ValueResult:
    """What a value run did (printed by ``summaries.value``)."""

    as_of: dt.date
    run_id: str
    model_name: str
    model_version: int
    promoted: bool
    totals: segments.Totals
    fitted: fitting.FittedValue | None = None
    """None when the version under the alias scored the date (``score_only``)."""
    backtest: backtest.Backtest | None = None
    by_segment: dict[str, list[segments.SegmentValue]] = field(default_factory=dict)
    table_versions: dict[str, int] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def by_segment(
    spark: SparkSession, cfg: AppConfig, scored: DataFrame
) -> dict[str, list[segments.SegmentValue]]:
    """Each segmentation's segments of ``features.as_of`` with their customers' value (none
    before a segmentation has published that date)."""
    if not tables.exists(spark, cfg.storage, tables.MEMBERSHIP):
        return {}
    members = tables.read(spark, cfg.storage, tables.MEMBERSHIP,
                          partitions={tables.AS_OF: cfg.features.as_of})  # fmt: skip
    return segments.by_segment(members, scored)


def record_fit(cfg: AppConfig, fitted: fitting.FittedValue, checked: backtest.Backtest) -> None:
    """Params, estimates, standard errors, log-likelihoods and the backtest, to the run."""
    vc = cfg.value
    tracking.log_params(
        {"model": vc.model, "time_unit": vc.time_unit, "horizon_periods": vc.horizon_periods,
         "margin": vc.margin, "discount_rate": vc.discount_rate, "spend": vc.spend,
         "fit_max_customers": vc.fit_max_customers, "holdout_periods": vc.holdout_periods,
         "as_of": cfg.features.as_of.isoformat(), "events": cfg.events_path()}
    )  # fmt: skip
    metrics = {"customers": float(fitted.customers), "repeat_buyers": float(fitted.repeat_buyers),
               "fit_customer_share": fitted.fit_share,
               "non_positive_repeat_spend": float(fitted.non_positive_spend),
               "spend_frequency_correlation": fitted.spend_frequency_correlation}  # fmt: skip
    for fit in (fitted.counts, fitted.spend):
        metrics[f"{fit.model}_log_likelihood"] = fit.log_likelihood
        for name, value in fit.estimates.items():
            metrics[f"{fit.model}_{name}"] = value
            se = fit.std_errors[name]
            if np.isfinite(se):
                metrics[f"{fit.model}_{name}_se"] = se
    tracking.log_metrics({**metrics, **checked.measures()})
    if fitted.notes:
        tracking.set_tags({"value_notes": "; ".join(fitted.notes)})
    tracking.log_json(
        {"skipped": checked.skipped, "by_frequency": checked.by_frequency,
         "tracking": checked.tracking, "calibration_end": checked.calibration_end},
        "value/backtest.json",
    )  # fmt: skip


def parameter_rows(fitted: fitting.FittedValue) -> list[dict[str, Any]]:
    """``value_model_parameters`` rows (without lineage): every estimate with its standard
    error, and each model's log-likelihood."""
    rows = []
    for fit in (fitted.counts, fitted.spend):
        rows += [
            {
                "model": fit.model,
                "parameter": k,
                "estimate": v,
                "std_error": _finite(fit.std_errors[k]),
            }
            for k, v in fit.estimates.items()
        ]
        rows.append({"model": fit.model, "parameter": "log_likelihood",
                     "estimate": fit.log_likelihood, "std_error": None})  # fmt: skip
    return rows


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def parameters_write(
    spark: SparkSession,
    cfg: AppConfig,
    fitted: fitting.FittedValue,
    lineage: tables.Lineage,
    *,
    job: str,
) -> tables.Write:
    rows = spark.createDataFrame(parameter_rows(fitted), tables.VALUE_PARAMETER_ROWS)
    version = {tables.MODEL_NAME: lineage.model_name, tables.MODEL_VERSION: lineage.model_version}
    return tables.snapshot_write(
        spark, cfg.storage, tables.VALUE_PARAMETERS,
        tables.with_lineage(rows, lineage, tables.VALUE_PARAMETERS), job=job,
        run_id=lineage.run_id, snapshot=version,
    )  # fmt: skip


def scores_write(
    spark: SparkSession, cfg: AppConfig, scored: DataFrame, lineage: tables.Lineage, *, job: str
) -> tables.Write:
    return tables.snapshot_write(
        spark, cfg.storage, tables.CUSTOMER_VALUE, scored, job=job, run_id=lineage.run_id,
        snapshot={tables.MODEL_NAME: lineage.model_name, tables.AS_OF: lineage.as_of},
        model_version=lineage.model_version,
    )  # fmt: skip


def report(cfg: AppConfig, result: ValueResult) -> dict[str, str]:
    """The value report (HTML, pictures embedded) beside the tables and in MLflow."""
    if not cfg.explain.report or result.fitted is None:
        return {}
    drawn = value_report.pictures(result.backtest)
    tracking.log_files({f"{n}.png": png for n, png in drawn.items()}, "plots")
    data = value_report.ValueReport(
        model_name=result.model_name, model_version=result.model_version, run_id=result.run_id,
        as_of=result.as_of, fitted=result.fitted, backtest=result.backtest,
        totals=result.totals, by_segment=result.by_segment, notes=result.notes,
    )  # fmt: skip
    html = value_report.render(data, cfg.value, drawn, created=dt.datetime.now(dt.UTC))
    name = f"value_report_{result.model_name}_v{result.model_version}_{result.as_of}.html"
    tracking.log_text(html, f"report/{name}")
    location = join_path(cfg.storage.table_path(tables.REPORTS_DIR), name)
    path = files.write_file(location, html.encode("utf-8"))
    tracking.set_tags({"report_path": path})
    return {"report": path}
