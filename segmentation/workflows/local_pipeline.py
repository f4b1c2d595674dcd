"""The whole local pipeline in one Spark application (one JVM): what `make run` runs.

Sample data (if absent; never when ``input.events.path`` names the user's events), identity
stitching of each date (when ``AppConfig.stitching`` says so: the sample generated with
``generator.identities``, or ``identity.enabled``), features,
customer value (``value.enabled``) and training as of ``train_as_of``, the rule-based
segmentations of that date, the attitudinal segmentation (``attitudes.enabled``), then scoring
``as_of`` with the value model, the trained model and its rules, and the configured audiences
(``audiences.definitions``) of the last date. The separate jobs stay for
spark-submit; this saves starting a JVM (and resolving the Delta jars) per step on a laptop,
and the steps of one date read, check and stage the events once (``stitched.sharing``): the
feature job's staged rows serve customer value, the outcome backtest and the assign step.
With stitching, the events' identifier columns are read and normalised once for both dates
(``sightings.sharing``), and the scored date's stitching is carried forward from the
training date's when nothing was seen in between (``identities.run(unchanged_since=...)``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from segmentation.config import AppConfig
from segmentation.errors import InputError
from segmentation.identity import sightings, stitched
from segmentation.storage import delta_tables
from segmentation.workflows import (
    assign,
    attitudes,
    audiences,
    build_features,
    generate,
    identities,
    rules,
    summaries,
    train,
    value,
)

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """Each step's summary and wall time, in order."""

    steps: list[tuple[str, str]] = field(default_factory=list)
    """(step name, summary text)."""
    seconds: list[tuple[str, float]] = field(default_factory=list)
    """(step name, wall seconds), the step's Spark work, writes and MLflow logging included."""
    echo: Callable[[str], None] = print

    def timings(self) -> str:
        """One line: each step's wall seconds and the total."""
        parts = ", ".join(f"{name} {s:.1f} s" for name, s in self.seconds)
        return f"Step times: {parts}; total {sum(s for _, s in self.seconds):.1f} s."

    def step(self, name: str, work: Callable[[], str]) -> None:
        """Run one step, keep its summary and wall time, echo the summary."""
        started = time.perf_counter()
        text = work()
        self.seconds.append((name, time.perf_counter() - started))
        self.steps.append((name, text))
        self.echo(text)


def at(cfg: AppConfig, as_of: dt.date) -> AppConfig:
    """``cfg`` with ``features.as_of`` set to ``as_of``."""
    return cfg.model_copy(update={"features": cfg.features.model_copy(update={"as_of": as_of})})


def own_events(cfg: AppConfig) -> bool:
    """The events are the user's (``input.events.path`` set), not the generated sample."""
    return cfg.input.events.path is not None


def preflight(cfg: AppConfig) -> None:
    """Before Spark starts: the user's events path and mapped columns (the sample's are
    checked once generated)."""
    if own_events(cfg):
        build_features.check_inputs(cfg)


def run(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    train_as_of: dt.date | None = None,
    score_as_of: dt.date | None = None,
    echo: Callable[[str], None] = print,
) -> PipelineResult:
    """Generate (if absent), build features, value, train and rule-segment ``train_as_of``,
    then value, assign and rule-segment ``score_as_of``; each step's summary is echoed as it
    finishes.

    Args:
        train_as_of: the training snapshot (default ``features.as_of``).
        score_as_of: the date scored with the trained model (None: no scoring step).
        echo: where summaries go (default: printed).

    Raises:
        InputError: ``score_as_of`` before the training date, or (``input.events.path`` set:
            no sample is generated) the events path or a mapped column is missing.
    """
    _check_dates(cfg, train_as_of)
    result = PipelineResult(echo=echo)
    trained_cfg = at(cfg, train_as_of or cfg.features.as_of)
    if score_as_of is not None and score_as_of < trained_cfg.features.as_of:
        raise InputError(
            f"the scored date {score_as_of} (--score-as-of) is before the training date "
            f"{trained_cfg.features.as_of} (--train-as-of): score a date on or after it"
        )
    _sample(spark, cfg, trained_cfg, result)
    # The inputs do not change from here on: identifiers are read once for both dates.
    with sightings.sharing():
        _dates(spark, cfg, trained_cfg, score_as_of, result)
    final = at(cfg, score_as_of) if score_as_of is not None else trained_cfg
    if cfg.audiences.definitions:
        result.step("audiences", lambda: summaries.audiences(audiences.run(spark, final), final))
    return result


def _dates(
    spark: SparkSession,
    cfg: AppConfig,
    trained_cfg: AppConfig,
    score_as_of: dt.date | None,
    result: PipelineResult,
) -> None:
    """The training date's steps, then the scored date's."""
    stitching = _identities(spark, trained_cfg, result)
    # The steps of one date stage the events once (stitched.sharing), after its stitching.
    with stitched.sharing():
        result.step(
            "features",
            lambda: summaries.features(build_features.run(spark, trained_cfg), trained_cfg),
        )
        if cfg.value.enabled:
            result.step(
                "value", lambda: summaries.value(value.run(spark, trained_cfg), trained_cfg)
            )
        _training(spark, trained_cfg, result)
    if score_as_of is None:
        return
    scored_cfg = at(cfg, score_as_of)
    _identities(spark, scored_cfg, result, unchanged_since=stitching)
    with stitched.sharing():
        if cfg.value.enabled:
            result.step("value", lambda: summaries.value(
                value.run(spark, scored_cfg, score_only=True), scored_cfg))  # fmt: skip
        result.step(
            "assign", lambda: summaries.assignment(assign.run(spark, scored_cfg), scored_cfg)
        )
        result.step("rules", lambda: summaries.rules(rules.run(spark, scored_cfg), scored_cfg))


def _check_dates(cfg: AppConfig, train_as_of: dt.date | None) -> None:
    """An explicit ``features.as_of`` (``--as-of``, ``--set features.as_of``) that the
    training date would silently override is an error naming both."""
    explicit = [o.split("=", 1)[1] for o in (cfg.origin.overrides if cfg.origin else ())
                if o.startswith("features.as_of=")]  # fmt: skip
    if train_as_of is None or not explicit:
        return
    if cfg.features.as_of != train_as_of:
        raise InputError(
            f"--as-of {explicit[-1]} (features.as_of) and --train-as-of {train_as_of} disagree: "
            "the pipeline trains on --train-as-of (make run's TRAIN_AS_OF) and scores "
            "--score-as-of (AS_OF); drop --as-of, or use TRAIN_AS_OF=... / AS_OF=..."
        )


def _sample(
    spark: SparkSession, cfg: AppConfig, trained_cfg: AppConfig, result: PipelineResult
) -> None:
    """The sample (unless the events are the user's), the inputs checked."""
    if own_events(cfg):
        # Checked before any work; the sample is not generated next to the user's data (its
        # customers dimension and survey would be read as theirs).
        build_features.check_inputs(trained_cfg)
        result.echo(f"Sample generation skipped: input.events.path is {cfg.input.events.path}.")
    else:
        result.step(
            "generate", lambda: summaries.generation(generate.run(spark, cfg, if_absent=True), cfg)
        )
        build_features.check_inputs(trained_cfg)


def _identities(
    spark: SparkSession,
    cfg: AppConfig,
    result: PipelineResult,
    *,
    unchanged_since: identities.IdentityResult | None = None,
) -> identities.IdentityResult | None:
    """Stitch the identifiers of ``features.as_of`` when stitching is configured (carried
    forward from ``unchanged_since`` when nothing was seen since: ``identities.run``)."""
    if cfg.stitching() is None:
        return None
    done: list[identities.IdentityResult] = []

    def work() -> str:
        done.append(identities.run(spark, cfg, unchanged_since=unchanged_since))
        return summaries.identity(done[0], cfg)

    result.step("identities", work)
    return done[0]


def _training(spark: SparkSession, cfg: AppConfig, result: PipelineResult) -> None:
    """The behavioural training, the rule-based segments and the attitudinal training."""
    result.step("train", lambda: summaries.training(train.run(spark, cfg), cfg))
    result.step("rules", lambda: summaries.rules(rules.run(spark, cfg), cfg))
    if not cfg.attitudes.enabled:
        return
    if cfg.attitudes.survey.path is None and not delta_tables.exists(spark, cfg.survey_path()):
        result.echo(
            f"Attitudinal segments skipped: no survey table at {cfg.survey_path()} (set "
            "attitudes.survey.path to your survey, or attitudes.enabled=false)."
        )
        return
    result.step("attitudes", lambda: summaries.attitudes(attitudes.run(spark, cfg), cfg))
