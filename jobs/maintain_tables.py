"""Maintenance entry point: vacuum the output tables (files of old versions and killed runs),
or upgrade tables written by an older release to the current layout (--upgrade)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from segmentation import cli, delta_tables, pipeline
from segmentation.errors import SegmentationError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="conf/local.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--retention-hours", type=int, default=168, help="keep files younger (min 24, default 168)"
    )
    parser.add_argument("--apply", action="store_true", help="delete (default: only list)")
    parser.add_argument(
        "--upgrade",
        action="store_true",
        help="repartition segment_membership / segment_migration by model_name, as_of",
    )
    args = parser.parse_args(argv)
    try:
        cfg = cli.load(args)
        if args.upgrade:
            upgraded = pipeline.upgrade_tables(cfg)
            for name, version in upgraded.items():
                print(f"{name}: repartitioned, version {version}")
            print("nothing to upgrade" if not upgraded else "upgrade done")
            return 0
        for name in delta_tables.tables_under(cfg.storage.warehouse):
            path = cfg.storage.table_path(name)
            files = delta_tables.vacuum(
                path, retention_hours=args.retention_hours, dry_run=not args.apply
            )
            verb = "deleted" if args.apply else "would delete"
            print(f"{name}: {verb} {len(files)} file(s)")
            for f in files:
                print(f"  {f}")
    except SegmentationError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
