"""Cost of the attitudinal segmentation at scale (BENCHMARKS.md, "Attitudinal segments").

Generates ``--respondents`` survey rows with ``--items`` Likert items (1-5) loading on
``--factors`` planted factors (items split evenly) and five planted segments, then times the
workflow's own steps (``segmentation.workflows.attitudes``): the survey check, the correlation
matrix (one Spark aggregation), parallel analysis and extraction (driver), factor scoring
(Spark SQL over every respondent), k selection and the final fit::

    PYTHONPATH=. .venv/bin/python -m tools.bench_attitudes --respondents 1000000 --items 30
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AttitudesConfig, ItemsConfig, load_config
from segmentation.features import attitude_space
from segmentation.inputs import survey
from segmentation.modeling import clustering, training
from segmentation.runtime.session import build_session
from segmentation.storage import tables
from segmentation.workflows import attitudes

TIMES: list[tuple[str, float, str]] = []


@contextmanager
def timed(name: str, detail: str = "") -> Iterator[None]:
    started = time.perf_counter()
    yield
    TIMES.append((name, time.perf_counter() - started, detail))
    print(f"{name}: {TIMES[-1][1]:.1f} s {detail}", flush=True)


def survey_rows(spark: SparkSession, n: int, items: int, factors: int, seed: int):
    """n respondents: segment s in 0..4 sets the factor means; each item = loading x factor +
    noise, cut to a 1-5 answer; about 2% of answers missing."""
    base = spark.range(n).select(
        F.format_string("C%08d", "id").alias(tables.CUSTOMER_ID),
        (F.abs(F.hash("id", F.lit(seed))) % 5).alias("segment"),
    )

    def factor(j: int) -> Column:
        mean = ((F.col("segment") + j) % 5 - 2) * 0.9  # segments differ on every factor
        return mean + F.randn(seed + 101 * j)

    scored = base.select(tables.CUSTOMER_ID, *[factor(j).alias(f"f{j}") for j in range(factors)])
    answers = []
    for i in range(items):
        latent = F.col(f"f{i % factors}") * 0.8 + F.randn(seed + 7 * i + 1) * 0.6
        answer = F.least(F.greatest(F.round(latent + 3), F.lit(1.0)), F.lit(5.0)).cast("int")
        missing = F.rand(seed + 13 * i + 2) < 0.02
        answers.append(F.when(~missing, answer).alias(f"q{i:02d}"))
    return scored.select(tables.CUSTOMER_ID, *answers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--respondents", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=30)
    p.add_argument("--factors", type=int, default=5)
    p.add_argument("--partitions", type=int, default=4)
    args = p.parse_args(argv)
    cfg = load_config("conf/local.yaml")
    spark_cfg = cfg.spark.model_copy(
        update={"conf": {**cfg.spark.conf, "spark.driver.memory": "8g"}}
    )
    cfg = cfg.model_copy(update={"spark": spark_cfg})
    spark = build_session(cfg)
    spark.conf.set("spark.sql.shuffle.partitions", str(args.partitions))
    names = tuple(f"q{i:02d}" for i in range(args.items))
    ac = AttitudesConfig(items=ItemsConfig(ordinal=names, scale=(1, 5)))
    ac = ac.model_copy(update={"blocks": ac.blocks.model_copy(update={"attributes": 0.0})})
    with timed("generate (not part of the job)", f"{args.respondents:,} x {args.items}"):
        raw = survey_rows(spark, args.respondents, args.items, args.factors, 7).cache()
        raw.count()
    with timed("survey check (one aggregation)"):
        checked = survey.check(raw, ac)
        respondents = checked.respondents.cache()
        retained = respondents.count()
    with timed("correlation, parallel analysis, extraction"):
        analysis = attitudes.analyse(respondents, checked, ac)
    detail = f"{analysis.n_factors} factors by {analysis.rule}; {retained:,} respondents"
    TIMES[-1] = (TIMES[-1][0], TIMES[-1][1], detail)
    with timed("factor scoring (all respondents)"):
        space = attitude_space.build_space(
            ac, checked, solution=analysis.solution, means=analysis.moments.means,
            stds=analysis.moments.stds, factor_names=analysis.names, levels={}, behaviour=(),
        )  # fmt: skip
        spaced = space.transform(respondents).cache()
        spaced.count()
    cc = ac.clustering
    est = clustering.SegmentationKMeans(
        features=space.columns, algorithm=cc.algorithm, seed=cc.seed, max_iter=cc.max_iter,
        transforms={}, default_transform="none",
    )  # fmt: skip
    with timed("k selection"):
        plain = est.fit_scaling(spaced)
        variances = dict(zip(plain.features, (s * s for s in plain.stds), strict=True))
        scaling = attitude_space.weighted_scaling(ac, space, plain, variances)
        selection = training.select_k(cc, training.selection_sample(cc, spaced, scaling))
    TIMES[-1] = (TIMES[-1][0], TIMES[-1][1], f"k {cc.k_min}-{cc.k_max}, chose {selection.chosen_k}")
    with timed("final fit (sample centres and restarts)"):
        model, _ = training.final_fit(cc, est, spaced, scaling, selection)
    with timed("assignment"):
        model.transform(spaced).select(tables.SEGMENT_ID).write.format("noop").mode(
            "overwrite"
        ).save()
    print("\n| step | seconds | detail |\n|---|---:|---|")
    for name, seconds, text in TIMES:
        print(f"| {name} | {seconds:.1f} | {text} |")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
