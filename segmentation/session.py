"""The one place a SparkSession is built. Never called at import time."""

from __future__ import annotations

import os
import shutil

from pyspark.sql import SparkSession

from segmentation.config import AppConfig
from segmentation.errors import SegmentationError

# delta-rs and Arrow readers cannot read Spark's legacy INT96 timestamps.
BASE_CONF = {
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    # Spark's _SUCCESS markers would be stray files inside Delta tables.
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.hadoop.parquet.enable.summary-metadata": "false",
}


def require_java() -> None:
    """Fail with an actionable message when no Java runtime can be found."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.path.exists(os.path.join(java_home, "bin", "java")):
        return
    if shutil.which("java") is None:
        raise SegmentationError(
            "Java was not found: Spark needs Java 17. Install it (Debian: apt-get install "
            "openjdk-17-jre-headless) or set JAVA_HOME to a Java 17 installation."
        )


def build_session(cfg: AppConfig) -> SparkSession:
    """Build (or reuse) the SparkSession described by ``cfg.spark``.

    Args:
        cfg: the application config; ``spark.master`` None leaves the master to spark-submit.

    Returns:
        The active session, with UTC time, microsecond Parquet timestamps and the configured
        shuffle partitions.
    """
    require_java()
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    if cfg.spark.master:
        builder = builder.master(cfg.spark.master)
    settings = {
        **BASE_CONF,
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.ui.enabled": str(cfg.spark.ui_enabled).lower(),
        **{k: str(v) for k, v in cfg.spark.conf.items()},
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
