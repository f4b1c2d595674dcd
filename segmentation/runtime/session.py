"""The one place a SparkSession is built, always with Delta Lake. Never called at import time.

Delta comes from delta-spark: the session enables its SQL extension and catalog and puts the
jars matching the installed ``delta-spark`` and ``pyspark`` on the classpath, resolved from
Maven Central through ``spark.jars.packages`` (cached by Ivy; ``make setup`` resolves them once)
or, on a machine without network, from local files listed in ``spark.delta_jars``.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import importlib.metadata
import os
import re
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import pyspark
from pyspark import SparkContext
from pyspark.errors import PySparkRuntimeError
from pyspark.sql import SparkSession

from segmentation.config import AppConfig, SparkConfig
from segmentation.errors import ConfigError, SegmentationError

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
SCALA_VERSION = "2.13"
# Transitive dependencies of delta-spark that Spark itself ships (in newer versions): left off
# the classpath, so the application neither carries ~70 MB of duplicate jars to every executor
# nor puts older copies of Spark's own libraries beside them.
PROVIDED_BY_SPARK = (
    "org.apache.hadoop:hadoop-client-api",
    "org.apache.hadoop:hadoop-client-runtime",
    "org.apache.parquet:parquet-hadoop",
    "org.apache.parquet:parquet-column",
    "org.apache.parquet:parquet-common",
    "org.apache.parquet:parquet-encoding",
    "org.apache.parquet:parquet-format-structures",
    "org.apache.parquet:parquet-jackson",
    "org.apache.logging.log4j:log4j-api",
    "org.apache.logging.log4j:log4j-core",
    "org.apache.logging.log4j:log4j-slf4j2-impl",
    "org.slf4j:slf4j-api",
    "com.fasterxml.jackson.core:jackson-databind",
    "com.fasterxml.jackson.core:jackson-core",
    "com.fasterxml.jackson.core:jackson-annotations",
    "org.xerial.snappy:snappy-java",
    "com.github.luben:zstd-jni",
    "io.airlift:aircompressor",
    "org.roaringbitmap:RoaringBitmap",
    "org.roaringbitmap:shims",
    "commons-logging:commons-logging",
    "commons-pool:commons-pool",
    "com.google.code.findbugs:jsr305",
    "org.locationtech.jts:jts-core",
)
OFFLINE_HINT = (
    "On a machine without access to Maven Central, copy the jars of a machine that ran "
    "`make setup` (`make delta-jars DIR=<folder>`) and list them, or their folder, in the "
    "config key spark.delta_jars."
)

# delta-rs and Arrow readers cannot read Spark's legacy INT96 timestamps.
BASE_CONF = {
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    # Spark's _SUCCESS markers would be stray files inside Delta tables.
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.hadoop.parquet.enable.summary-metadata": "false",
    # pandas and pyarrow write timestamps as INT64 TIMESTAMP(NANOS), which Spark cannot read as
    # timestamps ([PARQUET_TYPE_ILLEGAL]): read them as the nanoseconds they hold; the readers
    # turn a mapped time column back into instants (``sources``: its Arrow type says so).
    "spark.sql.legacy.parquet.nanosAsLong": "true",
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


def delta_coordinates() -> str:
    """The Maven coordinates of the Delta jars matching the installed delta-spark and pyspark.

    delta-spark 4.x publishes one artifact per Spark minor version, e.g.
    ``io.delta:delta-spark_4.2_2.13:4.4.0`` (what ``delta.configure_spark_with_delta_pip`` asks
    for too).
    """
    delta_version = importlib.metadata.version("delta-spark")
    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_{SCALA_VERSION}:{delta_version}"


def local_delta_jars(entries: Sequence[str]) -> list[str]:
    """The jar files ``spark.delta_jars`` names (files, folders of jars, or glob patterns).

    Raises:
        ConfigError: an entry matches no jar file.
    """
    jars: list[str] = []
    for entry in entries:
        path = Path(entry).expanduser()
        found = (
            sorted(str(p.resolve()) for p in path.glob("*.jar"))
            if path.is_dir()
            else sorted(str(Path(p).resolve()) for p in glob.glob(str(path)))
        )
        if not found:
            raise ConfigError(
                f"spark.delta_jars entry {entry!r} is no jar file or folder of jars. "
                + OFFLINE_HINT
            )
        jars += found
    return jars


def local_cores(master: str | None) -> int | None:
    """The task slots of a local master (``local``, ``local[4]``, ``local[*]``,
    ``local[4,2]``); None for any other master."""
    found = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master or "")
    if found is None:
        return None
    slots = found.group(1)
    if slots is None:
        return 1
    return (os.cpu_count() or 1) if slots == "*" else int(slots)


def snapshot_partitions(spark_cfg: SparkConfig) -> int:
    """The tasks Delta rebuilds a table's snapshot state with (Delta's default is 50).

    Every write and most reads of a table rebuild its state, so on a small table these tasks
    are pure overhead: no more than the shuffle partitions, and in local mode no more than one
    wave of the local task slots (``tools.bench_writes``, BENCHMARKS.md). A
    ``spark.databricks.delta.snapshotPartitions`` in ``spark.conf`` wins."""
    cores = local_cores(spark_cfg.master or submitted_master())
    partitions = spark_cfg.shuffle_partitions
    return max(1, partitions if cores is None else min(partitions, cores))


def delta_settings(spark_cfg: SparkConfig) -> dict[str, str]:
    """The Spark settings that enable Delta: extension, catalog and the jars."""
    settings = {
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.databricks.delta.snapshotPartitions": str(snapshot_partitions(spark_cfg)),
        # VACUUM lists the table's files with this many tasks (default 10,000: minutes of
        # empty tasks on a laptop); Spark's partition discovery of Parquet inputs uses it too.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(
            max(2, spark_cfg.shuffle_partitions)
        ),
    }
    if spark_cfg.delta_jars:
        settings["spark.jars"] = ",".join(local_delta_jars(spark_cfg.delta_jars))
    else:
        settings["spark.jars.packages"] = delta_coordinates()
        settings["spark.jars.excludes"] = ",".join(PROVIDED_BY_SPARK)
    return settings


def metastore_settings(cfg: AppConfig) -> dict[str, str]:
    """Spark's embedded Hive metastore in ``storage.metastore`` (a local folder), when the
    tables are registered (``storage.schema``); none otherwise (the session keeps the catalog
    its cluster configures: Unity Catalog, a Hive metastore, Glue).

    Raises:
        SegmentationError: another process holds the embedded metastore (``metastore_in_use``).
    """
    storage = cfg.storage
    if not (storage.registered and storage.metastore):
        return {}
    folder = Path(storage.metastore).expanduser().resolve()
    if SparkContext._active_spark_context is None:  # our own JVM would hold the lock
        check_metastore_free(folder)
    java_options = f"-Dderby.system.home={folder}"
    if "spark.driver.extraJavaOptions" in cfg.spark.conf:
        java_options = f"{cfg.spark.conf['spark.driver.extraJavaOptions']} {java_options}"
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={folder / 'metastore_db'};create=true"
        ),
        "spark.sql.warehouse.dir": str(folder / "spark-warehouse"),
        "spark.driver.extraJavaOptions": java_options,
    }


def metastore_in_use(folder: str) -> str:
    return (
        f"the Hive metastore in {folder} (storage.metastore: Spark's embedded Derby database) "
        "is in use by another Spark process, and embedded Derby admits one JVM at a time. Wait "
        "for that job to end, or run a metastore server and point every job at it "
        "(spark.conf: {spark.sql.catalogImplementation: hive, "
        "spark.hadoop.hive.metastore.uris: 'thrift://<host>:9083'} with storage.metastore: null)"
    )


def check_metastore_free(folder: Path) -> None:
    """Fail before Spark starts when a live JVM holds the embedded metastore.

    Derby holds an exclusive lock on ``metastore_db/dbex.lck`` while it runs (released when the
    JVM ends, even when it is killed), so a stale lock file left by a crash does not count.
    """
    lock = folder / "metastore_db" / "dbex.lck"
    if not lock.exists():
        return
    with open(lock, "rb+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise SegmentationError(metastore_in_use(str(folder))) from exc
        fcntl.lockf(handle, fcntl.LOCK_UN)


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
        The active session, with Delta Lake, UTC time, microsecond Parquet timestamps and the
        configured shuffle partitions.

    Raises:
        SegmentationError: Java is missing, or the Delta jars could not be resolved or are not
            on the classpath (the message names the Maven coordinates and the offline option).
    """
    require_java()
    name = f"{cfg.spark.app_name}-{job}" if job else cfg.spark.app_name
    builder = SparkSession.builder.appName(name)
    if cfg.spark.master:
        builder = builder.master(cfg.spark.master)
    settings = {
        **BASE_CONF,
        **delta_settings(cfg.spark),
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.ui.enabled": str(cfg.spark.ui_enabled).lower(),
        **metastore_settings(cfg),
        **{k: str(v) for k, v in cfg.spark.conf.items()},
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    _local_python(cfg.spark.master)
    try:
        spark = builder.getOrCreate()
    except PySparkRuntimeError as exc:
        if cfg.spark.delta_jars:
            raise
        raise SegmentationError(
            f"Spark could not start. If the log above says 'unresolved dependency', the Delta "
            f"jars {delta_coordinates()} could not be resolved from Maven Central (run "
            f"`make setup` once with network to cache them). {OFFLINE_HINT} ({exc})"
        ) from exc
    spark.sparkContext.setLogLevel("ERROR")
    check_delta(spark)
    return spark


def _local_python(master: str | None) -> None:
    """In local mode, Python workers (the value scoring's Arrow UDF) run this interpreter, with
    its numpy, pandas and pyarrow; PySpark would otherwise start ``python3`` from PATH
    (``PYSPARK_PYTHON``, when set, wins). On a cluster the workers' Python is the cluster's: it
    needs numpy, pandas, pyarrow and scipy, as any PySpark with pandas UDFs does."""
    if master and master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def check_delta(spark: SparkSession) -> None:
    """Fail with the coordinates to add when the session cannot use Delta.

    Spark only warns when ``spark.sql.extensions`` names a class it cannot load, so a session
    under spark-submit without ``--packages`` would otherwise fail at its first table.
    """
    from delta.tables import DeltaTable

    try:
        DeltaTable.isDeltaTable(spark, "file:///nonexistent-delta-probe")
    except Exception as exc:
        raise SegmentationError(
            f"the Spark session has no Delta Lake classes: submit with --packages "
            f"{delta_coordinates()} (spark-submit), or set spark.jars.packages to it. "
            f"{OFFLINE_HINT} ({type(exc).__name__}: {exc})"
        ) from exc


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m segmentation.runtime.session resolve-jars [--copy-to DIR]`` (``make setup``)."""
    parser = argparse.ArgumentParser(description="Delta jars for this installation")
    sub = parser.add_subparsers(dest="command", required=True)
    resolve = sub.add_parser("resolve-jars", help="resolve (and cache) the Delta jars now")
    resolve.add_argument("--copy-to", help="also copy the jars here, for spark.delta_jars")
    sub.add_parser("coordinates", help="print the Maven coordinates of the Delta jars")
    args = parser.parse_args(argv)
    if args.command == "coordinates":
        print(delta_coordinates())
        return 0
    from segmentation.config import load_config

    cfg = load_config(
        Path(__file__).resolve().parents[2] / "conf" / "base.yaml",
        overrides=["spark.master=local[1]", "spark.shuffle_partitions=1"],
    )
    try:
        spark = build_session(cfg, job="resolve-jars")
    except SegmentationError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    jars = [j for j in (spark.sparkContext.getConf().get("spark.jars", "") or "").split(",") if j]
    spark.stop()
    local = [j.removeprefix("file://").removeprefix("file:") for j in jars]
    print(f"Delta jars {delta_coordinates()} resolved: {len(local)} jar(s) in the Ivy cache")
    if args.copy_to:
        target = Path(args.copy_to)
        target.mkdir(parents=True, exist_ok=True)
        for jar in local:
            shutil.copy2(jar, target / Path(jar).name)
        print(f"copied to {target.resolve()}: set spark.delta_jars: [{target.resolve()}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
