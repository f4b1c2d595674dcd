"""Exploratory factor analysis: correlations with Spark, the small matrix on the driver.

* **Correlation matrix** (``moments``): one Spark aggregation over all respondents of the sums
  and sums of products of the imputed items, each shifted by its imputation value (exact
  integer sums for Likert answers; the shift keeps the differences small for other items).
  Pearson's r and the population means and standard deviations follow on the driver from
  those p (p + 3) / 2 sums.
* **Number of factors** (``parallel_analysis``): Horn's parallel analysis (Horn 1965,
  *Psychometrika* 30:179) with Glorfeld's percentile criterion (Glorfeld 1995): the leading
  eigenvalues of the correlation matrix are retained while each exceeds the chosen percentile
  of the same eigenvalue of random correlation matrices of n independent normal rows. Those
  matrices are drawn exactly, whatever n, from the Wishart distribution of the sample
  covariance (``scipy.stats.wishart``, Bartlett's decomposition), so the driver never
  simulates n rows. Kaiser's eigenvalue > 1 rule (Kaiser 1960) is reported beside it.
* **Extraction and rotation** (``extract``): ``factor_analyzer`` (minres or maximum
  likelihood; varimax, quartimax, promax or oblimin) on the correlation matrix.
* **Score weights**: the regression (Thurstone) method, as ``factor_analyzer.transform``:
  W = R^-1 S, with S the loadings (orthogonal) or the structure matrix (oblique); a factor
  score is the standardised items times W (``attitude_space`` turns W into SQL).
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy.optimize import linear_sum_assignment
from scipy.stats import wishart

from segmentation.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Moments:
    """Respondents, population means and standard deviations, and Pearson correlations."""

    n: int
    means: np.ndarray
    stds: np.ndarray
    corr: np.ndarray


def moments(df: DataFrame, columns: Sequence[str], shifts: Mapping[str, float]) -> Moments:
    """Means, standard deviations and correlations of ``columns`` in one Spark aggregation.

    Args:
        df: one row per respondent, ``columns`` without nulls (imputed).
        columns: the items, in order.
        shifts: a value near each column's centre (the imputation value), subtracted first.

    Raises:
        InputError: an item has the same value for every respondent.
    """
    d = [(F.col(f"`{c}`") - F.lit(float(shifts[c]))).cast("double") for c in columns]
    p = len(columns)
    exprs = [F.count(F.lit(1)).alias("n")]
    exprs += [F.sum(d[i]).alias(f"s{i}") for i in range(p)]
    exprs += [F.sum(d[i] * d[j]).alias(f"p{i}_{j}") for i in range(p) for j in range(i, p)]
    row = df.agg(*exprs).first()
    assert row is not None
    n = int(row["n"])
    s = np.array([float(row[f"s{i}"] or 0.0) for i in range(p)])
    cross = np.zeros((p, p))
    for i in range(p):
        for j in range(i, p):
            cross[i, j] = cross[j, i] = float(row[f"p{i}_{j}"] or 0.0)
    cov = (cross - np.outer(s, s) / n) / n if n else cross
    var = np.clip(np.diag(cov), 0.0, None)
    constant = [c for c, v in zip(columns, var, strict=True) if v <= 1e-12 * max(1.0, var.max())]
    if constant:
        raise InputError(
            f"item(s) {constant} have the same answer for every respondent: they carry no "
            "information; remove them from attitudes.items"
        )
    stds = np.sqrt(var)
    corr = cov / np.outer(stds, stds)
    np.fill_diagonal(corr, 1.0)
    means = np.array([shifts[c] for c in columns], dtype=float) + s / n
    return Moments(n=n, means=means, stds=stds, corr=corr)


@dataclass(frozen=True)
class ParallelAnalysis:
    """Observed eigenvalues against random ones, and the factors each rule retains."""

    observed: tuple[float, ...]
    random_mean: tuple[float, ...]
    threshold: tuple[float, ...]
    percentile: float
    iterations: int
    n_factors: int
    kaiser: int


def parallel_analysis(
    corr: np.ndarray, n: int, *, iterations: int, percentile: float, seed: int
) -> ParallelAnalysis:
    """Horn's parallel analysis on the correlation matrix of ``n`` respondents.

    Factors are retained in order while the observed eigenvalue exceeds the ``percentile`` of
    that eigenvalue over ``iterations`` random correlation matrices (Wishart draws).
    """
    p = corr.shape[0]
    observed = np.sort(np.linalg.eigvalsh(corr))[::-1]
    draws = wishart(df=max(n - 1, p), scale=np.eye(p)).rvs(
        size=iterations, random_state=np.random.default_rng(seed)
    )
    draws = np.asarray(draws).reshape(iterations, p, p)
    scale = 1.0 / np.sqrt(np.einsum("kii->ki", draws))
    random_corr = draws * scale[:, :, None] * scale[:, None, :]
    random_eigen = np.sort(np.linalg.eigvalsh(random_corr), axis=1)[:, ::-1]
    threshold = np.percentile(random_eigen, percentile, axis=0)
    retained = 0
    while retained < p and observed[retained] > threshold[retained]:
        retained += 1
    return ParallelAnalysis(
        observed=tuple(map(float, observed)), random_mean=tuple(map(float, random_eigen.mean(0))),
        threshold=tuple(map(float, threshold)), percentile=percentile, iterations=iterations,
        n_factors=retained, kaiser=int((observed > 1.0).sum()),
    )  # fmt: skip


@dataclass(frozen=True)
class Redundant:
    """An item left out because it carries what an earlier item carries: |r| at least the
    limit (a reverse-coded copy ``6 - x`` has r = -1)."""

    item: str
    kept: str
    r: float

    def note(self, limit: float) -> str:
        return (
            f"item {self.item} left out: its correlation with {self.kept} is {self.r:+.3f} "
            f"(|r| >= attitudes.factors.max_item_correlation {limit}), the same answer twice "
            "(a reverse-coded copy?); keeping both makes the correlation matrix singular"
        )


def redundant_items(corr: np.ndarray, items: Sequence[str], *, limit: float) -> list[Redundant]:
    """Items whose absolute correlation with an earlier kept item reaches ``limit``, in item
    order (the earlier item of each pair is kept)."""
    out: list[Redundant] = []
    dropped: set[int] = set()
    for j in range(len(items)):
        for i in range(j):
            if i not in dropped and abs(corr[i, j]) >= limit:
                out.append(Redundant(items[j], items[i], float(corr[i, j])))
                dropped.add(j)
                break
    return out


def subset(m: Moments, keep: Sequence[int]) -> Moments:
    """The moments of the items at ``keep`` (a slice: no new Spark pass)."""
    k = np.asarray(keep)
    return Moments(m.n, m.means[k], m.stds[k], m.corr[np.ix_(k, k)])


MAX_CONDITION = 1e8
"""A correlation matrix whose condition number exceeds this is numerically singular: some
items are (nearly) a linear combination of others, and score weights would explode."""


def check_conditioning(corr: np.ndarray, items: Sequence[str]) -> float:
    """The condition number of the items' correlation matrix (largest / smallest eigenvalue).

    Raises:
        InputError: it is (nearly) singular: names the items of the near-dependence (the
            largest components of the smallest eigenvalue's eigenvector), the condition number
            and the determinant.
    """
    values, vectors = np.linalg.eigh(corr)
    smallest = float(values[0])
    condition = float(values[-1] / smallest) if smallest > 0 else math.inf
    if condition <= MAX_CONDITION:
        return condition
    weights = np.abs(vectors[:, 0])
    involved = [items[i] for i in np.argsort(-weights)[:4] if weights[i] > 0.1]
    raise InputError(
        f"the items' correlation matrix is (nearly) singular: condition number {condition:.3g}"
        f", determinant {float(np.prod(values)):.3g}; {', '.join(involved)} are (nearly) a "
        "linear combination of each other. Remove one of them from attitudes.items (a "
        "reverse-coded or derived copy of another item), or lower "
        "attitudes.factors.max_item_correlation to drop such pairs"
    )


def heywood_items(solution: Solution, items: Sequence[str]) -> list[str]:
    """Items with a Heywood case: communality at or above 1 (a uniqueness at or below 0),
    which no real item can have; their loadings are not to be trusted."""
    return [item for item, h in zip(items, solution.communalities, strict=True) if h >= 0.999]


@dataclass(frozen=True)
class Solution:
    """A rotated factor solution (items x factors), the factors ordered by explained variance.

    Attributes:
        loadings: the pattern loadings.
        structure: item-factor correlations (= loadings for orthogonal rotations).
        phi: factor correlations (identity for orthogonal rotations).
        weights: regression score weights W = R^-1 structure.
        communalities, uniquenesses: per item.
        variance: per factor, the share of the items' total variance it explains (sum of
            squared loadings / p; for oblique rotations the factors overlap).
        score_sd: the standard deviation of each factor's regression score (sqrt(W' R W)).
    """

    loadings: np.ndarray
    structure: np.ndarray
    phi: np.ndarray
    weights: np.ndarray
    communalities: np.ndarray
    uniquenesses: np.ndarray
    variance: np.ndarray
    score_sd: np.ndarray


def extract(corr: np.ndarray, n_factors: int, *, method: str, rotation: str) -> Solution:
    """``factor_analyzer``'s extraction and rotation on the correlation matrix.

    Raises:
        InputError: more factors than the items can identify.
    """
    from factor_analyzer import FactorAnalyzer

    p = corr.shape[0]
    if n_factors >= p:
        raise InputError(
            f"{n_factors} factor(s) from {p} items: set attitudes.factors.n_factors below the "
            "number of items (or null for parallel analysis)"
        )
    fa = FactorAnalyzer(
        n_factors=n_factors, method=method, is_corr_matrix=True,
        rotation=None if rotation == "none" or n_factors == 1 else rotation,
    )  # fmt: skip
    with _library_compatible(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fa.fit(corr)
    loadings = np.asarray(fa.loadings_, dtype=float)
    structure = np.asarray(fa.structure_ if fa.structure_ is not None else loadings, dtype=float)
    phi = np.asarray(fa.phi_, dtype=float) if fa.phi_ is not None else np.eye(n_factors)
    weights = np.linalg.solve(corr, structure)
    score_var = np.einsum("ik,ij,jk->k", weights, corr, weights)
    return Solution(
        loadings=loadings, structure=structure, phi=phi, weights=weights,
        communalities=np.asarray(fa.get_communalities(), dtype=float),
        uniquenesses=np.asarray(fa.get_uniquenesses(), dtype=float),
        variance=(loadings**2).sum(axis=0) / p, score_sd=np.sqrt(score_var),
    )  # fmt: skip


@contextmanager
def _library_compatible() -> Iterator[None]:
    """Let ``factor_analyzer`` 0.5 run on scikit-learn >= 1.8.

    ``FactorAnalyzer.fit`` calls ``sklearn.utils.check_array(force_all_finite=...)``, a keyword
    scikit-learn renamed ``ensure_all_finite`` in 1.6 and removed in 1.8. For the duration of
    the call, and only where scikit-learn lacks the old keyword, the library's reference to
    ``check_array`` translates it.
    """
    from factor_analyzer import factor_analyzer as library
    from sklearn.utils import check_array

    if "force_all_finite" in inspect.signature(check_array).parameters:
        yield
        return

    def translated(*args: Any, **kwargs: Any) -> Any:
        if "force_all_finite" in kwargs:
            kwargs["ensure_all_finite"] = kwargs.pop("force_all_finite")
        return check_array(*args, **kwargs)

    original = library.check_array
    library.check_array = translated
    try:
        yield
    finally:
        library.check_array = original


@dataclass(frozen=True)
class FactorName:
    """A factor's short label and the top-loading items it comes from."""

    label: str
    items: tuple[str, ...]

    @property
    def full(self) -> str:
        return f"{self.label} ({', '.join(self.items)})"


def name_factors(loadings: np.ndarray, items: Sequence[str], *, top: int) -> list[FactorName]:
    """Each factor named from its ``top`` highest-|loading| items.

    The label is the words those items' names share at the start (``price_compare`` and
    ``price_use_coupons``: ``price``), else the top item; an item loading negatively is
    marked ``-``. Labels are made unique with the next item's name.
    """
    names: list[FactorName] = []
    for k in range(loadings.shape[1]):
        order = sorted(range(len(items)), key=lambda i: (-abs(loadings[i, k]), i))
        chosen = [items[i] + ("-" if loadings[i, k] < 0 else "") for i in order[:top]]
        words = [name.rstrip("-").split("_") for name in chosen]
        shared = []
        for parts in zip(*words, strict=False):
            if len(set(parts)) != 1:
                break
            shared.append(parts[0])
        label = "_".join(shared) if shared and len(chosen) > 1 else chosen[0]
        taken = {n.label for n in names}
        extra = iter(items[i] for i in order[top:])
        while label in taken:
            label = f"{label}/{next(extra, str(k + 1))}"
        names.append(FactorName(label, tuple(chosen)))
    return names


def congruence(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tucker's congruence coefficient between every column of ``a`` and of ``b``
    (Tucker 1951; Lorenzo-Seva & ten Berge 2006: >= 0.95 equal, 0.85-0.94 fair similarity)."""
    return (a.T @ b) / np.sqrt(np.outer((a**2).sum(axis=0), (b**2).sum(axis=0)))


def matched_congruence(planted: np.ndarray, recovered: np.ndarray) -> list[float]:
    """Per planted factor, |congruence| with the recovered factor matched to it (Hungarian
    assignment on |congruence|: factor order and sign are arbitrary); 0 when unmatched."""
    phi = np.abs(congruence(planted, recovered))
    rows, cols = linear_sum_assignment(-phi)
    out = [0.0] * planted.shape[1]
    for r, c in zip(rows, cols, strict=True):
        out[r] = float(phi[r, c])
    return out
