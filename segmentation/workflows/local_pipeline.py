"""The whole local pipeline in one Spark application (one JVM): what `make run` runs.

Sample data (if absent), features and training as of ``train_as_of``, the rule-based
segmentations of that date, the attitudinal segmentation (``attitudes.enabled``), then scoring
``as_of`` with the trained model and its rules. The separate jobs stay for spark-submit; this
saves starting a JVM (and resolving the Delta jars) per step on a laptop.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from segmentation import delta_tables, summaries
from segmentation.config import AppConfig
from segmentation.workflows import assign, attitudes, build_features, generate, rules, train

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """Each step's summary and wall time, in order."""

    steps: list[tuple[str, str]] = field(default_factory=list)
    """(step name, summary text)."""
    seconds: list[tuple[str, float]] = field(default_factory=list)
    """(step name, wall seconds), the step's Spark work, writes and MLflow logging included."""

    def timings(self) -> str:
        """One line: each step's wall seconds and the total."""
        parts = ", ".join(f"{name} {s:.1f} s" for name, s in self.seconds)
        return f"Step times: {parts}; total {sum(s for _, s in self.seconds):.1f} s."


def at(cfg: AppConfig, as_of: dt.date) -> AppConfig:
    """``cfg`` with ``features.as_of`` set to ``as_of``."""
    return cfg.model_copy(update={"features": cfg.features.model_copy(update={"as_of": as_of})})


def run(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    train_as_of: dt.date | None = None,
    score_as_of: dt.date | None = None,
    echo: Callable[[str], None] = print,
) -> PipelineResult:
    """Generate (if absent), build features, train and rule-segment ``train_as_of``, then
    assign and rule-segment ``score_as_of``; each step's summary is echoed as it finishes.

    Args:
        train_as_of: the training snapshot (default ``features.as_of``).
        score_as_of: the date scored with the trained model (None: no scoring step).
        echo: where summaries go (default: printed).
    """
    result = PipelineResult()
    trained_cfg = at(cfg, train_as_of or cfg.features.as_of)

    def step(name: str, work: Callable[[], str]) -> None:
        started = time.perf_counter()
        text = work()
        result.seconds.append((name, time.perf_counter() - started))
        result.steps.append((name, text))
        echo(text)

    step("generate", lambda: summaries.generation(generate.run(spark, cfg, if_absent=True), cfg))
    build_features.check_inputs(trained_cfg)
    step(
        "features", lambda: summaries.features(build_features.run(spark, trained_cfg), trained_cfg)
    )
    step("train", lambda: summaries.training(train.run(spark, trained_cfg), trained_cfg))
    step("rules", lambda: summaries.rules(rules.run(spark, trained_cfg), trained_cfg))
    if cfg.attitudes.enabled:
        if cfg.attitudes.survey.path is None and not delta_tables.exists(spark, cfg.survey_path()):
            echo(
                f"Attitudinal segments skipped: no survey table at {cfg.survey_path()} (set "
                "attitudes.survey.path to your survey, or attitudes.enabled=false)."
            )
        else:
            step(
                "attitudes",
                lambda: summaries.attitudes(attitudes.run(spark, trained_cfg), trained_cfg),
            )
    if score_as_of is not None:
        scored_cfg = at(cfg, score_as_of)
        step("assign", lambda: summaries.assignment(assign.run(spark, scored_cfg), scored_cfg))
        step("rules", lambda: summaries.rules(rules.run(spark, scored_cfg), scored_cfg))
    return result
