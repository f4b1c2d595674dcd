"""The one place a SparkSession is built. Never called at import time."""

from __future__ import annotations

import os
import shutil
import socket

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


def submitted_master() -> str | None:
    """The master spark-submit was given (None outside spark-submit)."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    from pyspark import SparkConf

    return SparkConf().get("spark.master", None)


def build_session(cfg: AppConfig, *, job: str | None = None) -> SparkSession:
    """Build (or reuse) the SparkSession described by ``cfg.spark``.

    Args:
        cfg: the application config; ``spark.master`` None leaves the master to spark-submit.
        job: appended to the application name, so each job is told apart in Spark's UIs.

    Returns:
        The active session, with UTC time, microsecond Parquet timestamps and the configured
        shuffle partitions.
    """
    require_java()
    name = f"{cfg.spark.app_name}-{job}" if job else cfg.spark.app_name
    builder = SparkSession.builder.appName(name)
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


def check_master_reachable(master: str | None, *, timeout: float = 5.0) -> None:
    """Fail fast, before any data is written, when a standalone master cannot be reached.

    Without this check Spark retries registration for about a minute and then stops the
    context with a message about "all masters are unresponsive".
    """
    if not master or not master.startswith("spark://"):
        return
    errors = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return
        except (OSError, ValueError) as exc:
            errors.append(f"{address}: {exc}")
    raise SegmentationError(
        f"Spark master {master} is not reachable ({'; '.join(errors)}): start it "
        "(make cluster-up for the local dev cluster) or fix --master / spark.master"
    )
