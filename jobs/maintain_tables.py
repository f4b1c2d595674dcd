"""Maintenance entry point for the output tables, with delta-spark: VACUUM (files of old
versions and of killed runs; lists them unless --apply), OPTIMIZE (--optimize: compact small
files), or upgrade tables written by an older release to the current layout (--upgrade)."""

from __future__ import annotations

from collections.abc import Sequence

from segmentation import cli, delta_tables, pipeline


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser(__doc__ or "")
    parser.add_argument(
        "--retention-hours", type=int, default=168, help="keep files younger (min 24, default 168)"
    )
    parser.add_argument("--apply", action="store_true", help="delete (default: only list)")
    parser.add_argument("--optimize", action="store_true", help="OPTIMIZE each table first")
    parser.add_argument(
        "--upgrade",
        action="store_true",
        help="repartition segment_membership / segment_migration by model_name, as_of",
    )
    args = parser.parse_args(argv)

    def body(spark, cfg):  # type: ignore[no-untyped-def]
        if args.upgrade:
            upgraded = pipeline.upgrade_tables(spark, cfg)
            for name, version in upgraded.items():
                print(f"{name}: repartitioned, version {version}")
            print("nothing to upgrade" if not upgraded else "upgrade done")
            return
        for name in delta_tables.tables_under(spark, cfg.storage.warehouse):
            path = cfg.storage.table_path(name)
            if args.optimize:
                done = delta_tables.optimize(spark, path)
                print(
                    f"{name}: OPTIMIZE compacted {done['files_removed']} file(s) into "
                    f"{done['files_added']}"
                )
            files = delta_tables.vacuum(
                spark, path, retention_hours=args.retention_hours, dry_run=not args.apply
            )
            verb = "deleted" if args.apply else "would delete"
            print(f"{name}: VACUUM {verb} {len(files)} file(s)")
            for f in files:
                print(f"  {f}")

    return cli.run(args, body)


if __name__ == "__main__":
    cli.exit_with(main)
