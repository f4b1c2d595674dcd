"""Promoting a registered model version to the alias (default champion): a deliberate step.

The move is recorded as an MLflow run (``job=promote_model``) and as tags on the model version.
It writes no table: run assign_segments afterwards to publish the new model's membership.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from segmentation.config import AppConfig
from segmentation.errors import InputError
from segmentation.runtime import tracking

JOB = "promote_model"


@dataclass(frozen=True)
class PromoteResult:
    model_name: str
    alias: str
    version: int
    previous_version: int | None
    run_id: str


def run(spark: SparkSession | None, cfg: AppConfig, *, version: int | None = None) -> PromoteResult:
    """Move ``tracking.alias`` to ``version`` (None: the latest registered), logged in MLflow.

    Needs no Spark session (``spark`` is ignored).

    Raises:
        InputError: the model has no registered version; SegmentationError: no such version,
            or a registry error (naming the tracking URI), before anything is recorded.
    """
    tc = cfg.tracking
    experiment_id = tracking.configure(tc)
    if version is None:
        version = tracking.latest_version(tc.registered_model)
        if version is None:
            raise InputError(f"model {tc.registered_model} has no registered version to promote")
    training_run = tracking.version_run_id(tc.registered_model, version)
    tracking.alias_version(tc.registered_model, tc.alias)  # a registry error stops here, first
    with tracking.run(experiment_id, f"promote {tc.registered_model} v{version}") as run_id:
        tracking.set_tags({"job": JOB})
        previous = tracking.promote(
            tc.registered_model, tc.alias, version, reason=f"promote_model run {run_id}"
        )
        tracking.log_params(
            {"model_name": tc.registered_model, "alias": tc.alias, "version": version,
             "previous_version": previous if previous is not None else "none",
             "training_run_id": training_run}
        )  # fmt: skip
    return PromoteResult(tc.registered_model, tc.alias, version, previous, run_id)
