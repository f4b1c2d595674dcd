"""The Gaussian hypergeometric function the BG/NBD conditional expectation needs, evaluated
stably for any purchase count.

The conditional expectation of BG/NBD (Fader, Hardie & Lee 2005, eq. 10) contains
``((alpha + T) / (alpha + T + t)) ** (r + x) * 2F1(r + x, b + x; a + b + x - 1; z)`` with
``z = t / (alpha + T + t)``. Its direct series overflows for large ``x`` (scipy's ``hyp2f1``
returns ``inf`` at x = 3000, z = 0.25) although the product is a modest number. Euler's
transformation ``2F1(A', B'; C'; z) = (1 - z) ** (C' - A' - B') * 2F1(C' - A', C' - B'; C'; z)``
(Abramowitz & Stegun 15.3.3) turns the product into

    (1 - z) ** (a - 1) * 2F1(a + b - 1 - r, a - 1; a + b + x - 1; z),

whose upper parameters no longer grow with ``x`` (its lower one does, which only speeds the
series up): no power of ``x`` is ever formed. MBG/NBD has the same shape with ``c = a + b + x``.

:func:`hyp2f1` sums the series in double precision, vectorised over customers, and stops each
customer's sum only when a proven bound on the rest of the series is below ``eps`` relative to
the partial sum (:func:`tail_ratio_bound`).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-15
"""Relative bound on the truncated tail of every sum."""
MAX_TERMS = 200_000
_CHECK_EVERY = 4
"""The tail bound is checked every few terms (it costs as much as a term)."""
"""A row whose bound is not met after this many terms (z within ~1e-4 of 1) is NaN; the
caller flags it."""


def tail_ratio_bound(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, z: np.ndarray, k: int
) -> np.ndarray:
    """An upper bound ``R_k`` on ``|t_{i+1} / t_i|`` for every ``i >= k`` (``k >= 1``).

    The ratio of consecutive terms of ``2F1(a, b; c; z)`` is
    ``rho_i = (a + i)(b + i) z / ((c + i)(i + 1))``. For ``i >= k > max(0, -c)``:
    ``|a + i| <= i (1 + |a| / k)``, ``|b + i| <= i (1 + |b| / k)``, ``i + 1 > i`` and
    ``c + i >= i (1 - max(0, -c) / k)``, so ``|rho_i| <= z (1 + |a|/k)(1 + |b|/k) /
    (1 - max(0, -c)/k)``, which does not grow with ``i``. When ``R_k < 1`` the terms after
    ``t_k`` are dominated by a geometric series: ``|sum_{i>k} t_i| <= |t_k| R_k / (1 - R_k)``.
    Rows where ``k <= max(0, -c)`` get ``inf`` (no bound yet).
    """
    neg_c = np.maximum(0.0, -c)
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = z * (1 + np.abs(a) / k) * (1 + np.abs(b) / k) / (1 - neg_c / k)
    return np.where(k > neg_c, bound, np.inf)


def hyp2f1(
    a_in: np.ndarray | float,
    b_in: np.ndarray | float,
    c_in: np.ndarray | float,
    z_in: np.ndarray | float,
    *,
    eps: float = EPS,
    max_terms: int = MAX_TERMS,
) -> np.ndarray:
    """``2F1(a, b; c; z)`` for ``0 <= z < 1`` by its power series, summed until the tail bound
    of :func:`tail_ratio_bound` is at most ``eps`` times the partial sum (per element).

    Elements that do not converge within ``max_terms`` terms, or with ``c`` a non-positive
    integer (the function is undefined), are NaN.
    """
    arrays = [np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(a_in, b_in, c_in, z_in)]
    shape = arrays[3].shape
    a_all, b_all, c_all, z_all = (v.ravel() for v in arrays)
    if np.any((z_all < 0) | (z_all >= 1)):
        raise ValueError("hyp2f1 needs 0 <= z < 1")
    out = np.full(z_all.shape, np.nan)
    out[z_all == 0] = 1.0
    # Only the rows still summing are carried from one term to the next (most rows converge
    # in a few dozen terms; rows with z near 1 take longer).
    active = np.flatnonzero(z_all != 0)
    a: np.ndarray = a_all[active]
    b: np.ndarray = b_all[active]
    c: np.ndarray = c_all[active]
    z: np.ndarray = z_all[active]
    term = np.ones(active.shape)
    total = np.ones(active.shape)
    for k in range(max_terms):
        if active.size == 0:
            break
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            term = term * (a + k) * (b + k) / ((c + k) * (k + 1)) * z
            total = total + term
        if k % _CHECK_EVERY and k + 1 < max_terms:
            continue
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            bound = tail_ratio_bound(a, b, c, z, k + 1)
            rest = np.abs(term) * bound / (1 - bound)
        finite = np.isfinite(total)
        finished = ((bound < 1) & (rest <= eps * np.abs(total))) | ~finite
        if finished.any():
            out[active[finished]] = np.where(finite[finished], total[finished], np.nan)
            keep = ~finished
            active, a, b, c, z = active[keep], a[keep], b[keep], c[keep], z[keep]
            term, total = term[keep], total[keep]
    return out.reshape(shape)
