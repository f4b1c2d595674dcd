"""What every job entry point shares: arguments, config, logging, session, clean exit."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from segmentation.config import AppConfig, load_config, to_dict
from segmentation.errors import SegmentationError, parquet_type_mismatch
from segmentation.runtime import tracking
from segmentation.runtime.session import build_session, check_master_reachable, submitted_master

log = logging.getLogger("segmentation")


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every job takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--config",
        default="conf/local.yaml",
        help="overlay on the base.yaml of its folder (default conf/local.yaml)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set training.k_max=8 (repeatable)",
    )
    p.add_argument("--as-of", help="snapshot date YYYY-MM-DD (overrides features.as_of)")
    p.add_argument(
        "--run-key",
        help="identifies this run across retries (storage.run_key): a retry commits nothing twice",
    )
    return p


def load(args: argparse.Namespace) -> AppConfig:
    """The config for these arguments, logged once with secrets masked."""
    overrides = list(args.overrides)
    if getattr(args, "as_of", None):
        overrides.append(f"features.as_of={args.as_of}")
    if getattr(args, "run_key", None):
        overrides.append(f"storage.run_key={args.run_key}")
    cfg = load_config(args.config, overrides=overrides)
    resolved = json.dumps(to_dict(cfg), sort_keys=True)
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:12]
    log.info(
        "config: conf/base.yaml + %s%s (resolved config sha256 %s; in full at DEBUG and in "
        "each MLflow run's config/resolved_config.json)", args.config,
        "".join(f" --set {o}" for o in overrides), digest,
    )  # fmt: skip
    log.debug("resolved config: %s", resolved)
    return cfg


@dataclass(frozen=True)
class Job:
    """A job entry point: its workflow, its summary and its own command-line options.

    Attributes:
        description: the ``--help`` text.
        run: the workflow's ``run(spark, cfg, **options)``.
        summary: turns its result into the text printed on success.
        options: extra arguments, ``--flag`` -> argparse keywords (``dest`` names the keyword
            passed to ``run``).
        preflight: checks that need no Spark, run before the session starts.
        spark: False for a job that needs no session (``run`` gets None).
    """

    description: str
    run: Callable[..., Any]
    summary: Callable[[Any, AppConfig], str]
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    preflight: Callable[[AppConfig], None] | None = None
    spark: bool = True


def main(job: Job, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` for ``job``, run it and print its summary; returns the exit code."""
    p = parser(job.description)
    dests = [p.add_argument(flag, **kwargs).dest for flag, kwargs in job.options.items()]
    args = p.parse_args(argv)
    kwargs = {d: getattr(args, d) for d in dests}

    def body(spark: SparkSession | None, cfg: AppConfig) -> None:
        print(job.summary(job.run(spark, cfg, **kwargs), cfg))

    return run(args, body, preflight=job.preflight, spark=job.spark)


def run(
    args: argparse.Namespace,
    body: Callable[[SparkSession | None, AppConfig], None],
    *,
    preflight: Callable[[AppConfig], None] | None = None,
    spark: bool = True,
) -> int:
    """Load config, run ``preflight`` (before any Spark), build the session, run ``body``.

    The session is always stopped; ``spark=False`` builds none (``body`` gets None).

    Returns the process exit code: 0 on success, 2 for a problem the user can fix (the message
    says which), 1 for anything else.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("py4j", "mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    session: SparkSession | None = None
    try:
        cfg = load(args)
        if spark:
            check_master_reachable(cfg.spark.master or submitted_master())
        tracking.check_server(cfg.tracking)
        if preflight is not None:
            preflight(cfg)
        if spark:
            session = build_session(cfg, job=Path(sys.argv[0]).stem)
        body(session, cfg)
        return 0
    except SegmentationError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        mismatch = parquet_type_mismatch(exc)  # raised by any Spark action reading an input
        if mismatch is None:
            raise
        print(f"ERROR: {mismatch}", file=sys.stderr)
        return 2
    finally:
        if session is not None:
            session.stop()


def exit_with(job: Job) -> None:
    """``sys.exit(main(job))`` for the jobs' ``__main__`` blocks."""
    sys.exit(main(job))
