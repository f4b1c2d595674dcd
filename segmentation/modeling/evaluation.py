"""Segment quality against planted truth: the adjusted Rand index, computed distributed.

Only the contingency table (true label x segment counts) reaches the driver.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import DataFrame


def _comb2(n: int) -> float:
    return n * (n - 1) / 2.0


def adjusted_rand_index_from_counts(counts: Mapping[tuple[object, object], int]) -> float:
    """ARI (Hubert & Arabie) from ``{(true_label, predicted_label): count}``."""
    total = sum(counts.values())
    rows: dict[object, int] = {}
    cols: dict[object, int] = {}
    for (a, b), n in counts.items():
        rows[a] = rows.get(a, 0) + n
        cols[b] = cols.get(b, 0) + n
    index = sum(_comb2(n) for n in counts.values())
    sum_rows = sum(_comb2(n) for n in rows.values())
    sum_cols = sum(_comb2(n) for n in cols.values())
    expected = sum_rows * sum_cols / _comb2(total) if total > 1 else 0.0
    maximum = (sum_rows + sum_cols) / 2.0
    if maximum == expected:
        return 1.0
    return (index - expected) / (maximum - expected)


def adjusted_rand_index(df: DataFrame, truth_col: str, predicted_col: str) -> float:
    """ARI between two label columns of ``df``."""
    rows = df.groupBy(truth_col, predicted_col).count().collect()
    return adjusted_rand_index_from_counts(
        {(r[truth_col], r[predicted_col]): int(r["count"]) for r in rows}
    )
