"""MLflow: one run per training, the model logged and registered, the alias moved on purpose."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.exceptions
import mlflow.pyfunc
import mlflow.spark
import pandas as pd
from mlflow import MlflowClient
from pyspark.ml import PipelineModel

from segmentation.config import TrackingConfig, mask_uri
from segmentation.errors import SegmentationError

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
# MLflow caps a param value at 6000 characters; longer values are truncated, never rejected.
_PARAM_LIMIT = 6000


def check_server(cfg: TrackingConfig, *, timeout: float = 5.0) -> None:
    """Fail fast, before any data is written, when an HTTP tracking server is down.

    Any HTTP answer (even 401/403) counts as reachable; only no answer is an error.
    """
    uri = cfg.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    request = urllib.request.Request(url)
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:
        raise SegmentationError(
            f"MLflow tracking server {mask_uri(uri)} (tracking.tracking_uri) is not reachable: "
            f"{getattr(exc, 'reason', exc)}. Start it (make cluster-up for the local one) or fix "
            "the URI; nothing was written."
        ) from exc


def configure(cfg: TrackingConfig) -> str:
    """Point MLflow at the configured store and experiment; returns the experiment id."""
    mlflow.set_tracking_uri(cfg.tracking_uri)
    client = MlflowClient()
    try:
        experiment = client.get_experiment_by_name(cfg.experiment)
    except Exception as exc:
        raise SegmentationError(
            f"MLflow tracking store {cfg.tracking_uri} (tracking.tracking_uri) is not "
            f"reachable: {exc}"
        ) from exc
    if experiment is not None:
        return str(experiment.experiment_id)
    location = cfg.artifact_location
    if location and "://" not in location:
        location = Path(location).resolve().as_uri()
    return str(client.create_experiment(cfg.experiment, artifact_location=location or None))


@contextmanager
def run(experiment_id: str, name: str | None = None, *, nested: bool = False) -> Iterator[str]:
    """An MLflow run (nested in the active one with ``nested``); yields its run id."""
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=nested) as active:
        yield str(active.info.run_id)


def log_params(params: Mapping[str, Any]) -> None:
    """Log params to the active run, truncating values past MLflow's limit."""
    mlflow.log_params({k: str(v)[:_PARAM_LIMIT] for k, v in params.items()})


def log_metrics(metrics: Mapping[str, float], *, step: int | None = None) -> None:
    """Log metrics to the active run (``step``: e.g. the k of a candidate)."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Set tags on the active run (values as text)."""
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_json(data: Any, name: str) -> None:
    """Log ``data`` as a JSON artifact called ``name``."""
    mlflow.log_text(json.dumps(data, indent=2, sort_keys=True, default=str), name)


def log_text(text: str, name: str) -> None:
    """Log ``text`` as an artifact called ``name``."""
    mlflow.log_text(text, name)


def log_files(files: Mapping[str, bytes], folder: str) -> None:
    """Log binary files (e.g. PNG pictures) as artifacts under ``folder``."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            local = Path(tmp) / name
            local.write_bytes(data)
            mlflow.log_artifact(str(local), folder)


def log_spark_model(
    pipeline: PipelineModel, *, registered_model: str, pyspark_version: str
) -> tuple[str, int]:
    """Log the fitted pipeline under the active run and register it.

    Returns:
        The model URI and the registered version number.
    """
    with tempfile.TemporaryDirectory(prefix="segmentation-model-") as tmp:
        info = mlflow.spark.log_model(
            pipeline,
            artifact_path=MODEL_ARTIFACT,
            registered_model_name=registered_model,
            # Explicit requirements: inferring them would load the model in a subprocess.
            pip_requirements=[f"pyspark=={pyspark_version}"],
            dfs_tmpdir=os.path.join(tmp, "dfs"),
        )
    version = info.registered_model_version
    if version is None:
        raise SegmentationError(f"MLflow did not register model {registered_model}")
    return info.model_uri, int(version)


class _Predictor(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """A registered model whose ``predict`` is a plain function of a pandas frame."""

    def __init__(self, predict: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        self._predict = predict

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return self._predict(model_input)


def log_python_model(
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    *,
    registered_model: str,
    requirements: Sequence[str],
) -> tuple[str, int]:
    """Log ``predict`` (a picklable function of a pandas frame) as an MLflow ``pyfunc`` model
    under the active run and register it; returns the model URI and the version."""
    info = mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=_Predictor(predict),
        registered_model_name=registered_model,
        # Explicit requirements: inferring them would load the model in a subprocess.
        pip_requirements=list(requirements),
    )
    version = info.registered_model_version
    if version is None:
        raise SegmentationError(f"MLflow did not register model {registered_model}")
    return info.model_uri, int(version)


def promote(registered_model: str, alias: str, version: int, *, reason: str) -> int | None:
    """Point ``alias`` at ``version`` (a deliberate, logged step); returns the previous version.

    The model version gets tags saying when, why and from which version it was promoted.
    """
    client = MlflowClient()
    previous = alias_version(registered_model, alias)
    prior = previous.version if previous is not None else None
    version_run_id(registered_model, version)  # a clear error for a version that is not there
    client.set_registered_model_alias(registered_model, alias, str(version))
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for key, value in {
        f"promoted_to_{alias}_at": stamp,
        f"promoted_to_{alias}_from_version": str(prior) if prior is not None else "none",
        f"promoted_to_{alias}_reason": reason,
    }.items():
        client.set_model_version_tag(registered_model, str(version), key, value)
    log.info(
        "model %s version %s is now @%s (was %s): %s", registered_model, version, alias, prior,
        reason,
    )  # fmt: skip
    return prior


@dataclass(frozen=True)
class AliasVersion:
    version: int
    run_id: str


# MLflow's error code for a registered model or version that does not exist.
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


def registry_error(exc: Exception, doing: str) -> SegmentationError:
    """An MLflow registry or artifact-store failure as a job-stopping error naming the store."""
    text = (exc.message if isinstance(exc, mlflow.exceptions.MlflowException) else str(exc)).strip()
    first = text.splitlines()[0] if text else repr(exc)
    return SegmentationError(
        f"the MLflow registry at {mask_uri(mlflow.get_tracking_uri())} (tracking.tracking_uri) "
        f"failed while {doing}: {first}. Nothing was written: fix the store or the URI and "
        "re-run."
    )


def _not_found(exc: Exception) -> bool:
    return isinstance(exc, mlflow.exceptions.MlflowException) and exc.error_code == NOT_FOUND


def alias_version(registered_model: str, alias: str) -> AliasVersion | None:
    """The version (and its training run) under ``registered_model@alias``, or None.

    None means exactly "no such alias": the registered model does not exist (MLflow's
    ``RESOURCE_DOES_NOT_EXIST``), or exists without the alias (read from the model's aliases,
    not from an error message).

    Raises:
        SegmentationError: any other registry error (store unreachable, damaged, refused),
            with the registry's message and the tracking URI; a job must stop before it writes
            anything, not start over as if there were no champion.
    """
    client = MlflowClient()
    try:
        model = client.get_registered_model(registered_model)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise registry_error(exc, f"looking up {registered_model}@{alias}") from exc
    version = dict(model.aliases or {}).get(alias)
    if version is None:
        return None
    try:
        mv = client.get_model_version(registered_model, str(version))
    except Exception as exc:
        raise registry_error(exc, f"reading {registered_model} version {version}") from exc
    return AliasVersion(int(mv.version), str(mv.run_id))


def latest_version(registered_model: str) -> int | None:
    """The highest registered version of ``registered_model``, or None when it has none.

    Raises:
        SegmentationError: the registry cannot be searched (names the tracking URI).
    """
    try:
        versions = MlflowClient().search_model_versions(f"name = '{registered_model}'")
    except Exception as exc:
        if _not_found(exc):
            return None
        raise registry_error(exc, f"listing the versions of {registered_model}") from exc
    return max((int(v.version) for v in versions), default=None)


def version_run_id(registered_model: str, version: int) -> str:
    """The training run that logged ``version``.

    Raises:
        SegmentationError: no such version, or a registry error (both name the tracking URI).
    """
    try:
        return str(MlflowClient().get_model_version(registered_model, str(version)).run_id)
    except Exception as exc:
        if _not_found(exc):
            raise SegmentationError(
                f"model {registered_model} has no version {version} in the registry at "
                f"{mask_uri(mlflow.get_tracking_uri())} (tracking.tracking_uri): check the "
                "version and the config you ran the training with"
            ) from exc
        raise registry_error(exc, f"reading {registered_model} version {version}") from exc


def load_json(run_id: str, name: str) -> Any | None:
    """A JSON artifact of a run, or None when the run has no such artifact.

    Raises:
        SegmentationError: the artifact store cannot be listed or read, or the artifact is
            not JSON (names the URI).
    """
    text = load_text(run_id, name)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise registry_error(exc, f"reading artifact {name} of run {run_id}") from exc


def load_text(run_id: str, name: str) -> str | None:
    """A text artifact of a run, or None when the run has no such artifact.

    Raises:
        SegmentationError: the artifact store cannot be listed or read (names the URI).
    """
    folder = os.path.dirname(name) or None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            listed = {f.path for f in MlflowClient().list_artifacts(run_id, folder)}
            if name not in listed:
                return None
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=name, dst_path=tmp
            )
            return Path(local).read_text()
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            raise registry_error(exc, f"reading artifact {name} of run {run_id}") from exc


def load_model(registered_model: str, version: int) -> PipelineModel:
    """The pipeline of one registered version (resolve an alias first: a pinned version)."""
    with tempfile.TemporaryDirectory(prefix="segmentation-model-") as tmp:
        return mlflow.spark.load_model(
            f"models:/{registered_model}/{version}", dfs_tmpdir=os.path.join(tmp, "dfs")
        )
