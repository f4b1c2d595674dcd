"""Promote a registered model version to the alias (default champion): a deliberate step.

The move is recorded as an MLflow run (job=promote_model) and as tags on the model version.
It writes no table: run assign_segments afterwards to publish the new model's membership.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from segmentation import cli, pipeline
from segmentation.errors import SegmentationError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="conf/local.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--version", type=int, default=None, help="model version (default: the latest)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        cfg = cli.load(args)
        r = pipeline.promote_model(cfg, args.version)
    except SegmentationError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    print(
        f"model {r.model_name} version {r.version} is now @{r.alias} (was "
        f"{r.previous_version if r.previous_version is not None else 'none'}); recorded in "
        f"MLflow run {r.run_id}. Publish its membership with: make assign"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
