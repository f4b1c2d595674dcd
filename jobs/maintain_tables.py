"""Maintenance entry point, with delta-spark: VACUUM (lists files of old versions and killed
runs; --apply deletes), OPTIMIZE (--optimize), or --upgrade tables of an older release."""

from segmentation.runtime import cli
from segmentation.workflows import maintain, summaries

JOB = cli.Job(
    "VACUUM / OPTIMIZE the output tables, or upgrade an older layout",
    maintain.run,
    summaries.maintenance,
    options={
        "--retention-hours": {"type": int, "default": 168, "help": "keep younger files (>= 24)"},
        "--apply": {"action": "store_true", "help": "delete (default: only list)"},
        "--optimize": {"action": "store_true", "help": "OPTIMIZE each table first"},
        "--upgrade": {"action": "store_true", "help": "repartition tables of an older release"},
    },
)

if __name__ == "__main__":
    cli.exit_with(JOB)
