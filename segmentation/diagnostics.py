"""Checks that a cluster runs this library where it should."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession


def _origin(_: Any) -> tuple[str, str, str]:
    import os
    import sys

    import segmentation

    # An executor's working directory is <worker work dir>/<app id>/<executor id>.
    return (os.getcwd(), sys.executable, segmentation.__file__)


def executor_library_origins(spark: SparkSession, *, tasks: int = 8) -> list[dict[str, str]]:
    """Where executors import ``segmentation`` from, and with which Python.

    Runs ``tasks`` small Python tasks; each imports the library on its executor. On a cluster
    fed with ``--py-files`` the file lies inside the shipped archive.
    """
    rows = spark.sparkContext.parallelize(range(tasks), tasks).map(_origin).distinct().collect()
    return [{"executor_dir": d, "python": p, "module_file": f} for d, p, f in sorted(rows)]
