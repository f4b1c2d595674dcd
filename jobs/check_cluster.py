"""spark-submit entry point: where executors import the library from, and with which Python
(JSON). On a cluster fed with --py-files the module file lies inside the shipped archive."""

import json
from typing import Any

from segmentation.runtime import cli


def _origin(_: Any) -> tuple[str, str, str]:
    import os
    import sys

    import segmentation

    # An executor's working directory is <worker work dir>/<app id>/<executor id>.
    return (os.getcwd(), sys.executable, segmentation.__file__)


def origins(spark: Any, cfg: Any, *, tasks: int = 8) -> list[dict[str, str]]:
    rows = spark.sparkContext.parallelize(range(tasks), tasks).map(_origin).distinct().collect()
    return [{"executor_dir": d, "python": p, "module_file": f} for d, p, f in sorted(rows)]


JOB = cli.Job(
    "Check that executors import the shipped segmentation library",
    origins,
    lambda result, cfg: json.dumps(result),
)

if __name__ == "__main__":
    cli.exit_with(JOB)
