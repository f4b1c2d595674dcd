"""Buy-'til-you-die models of purchase counts (BG/NBD, MBG/NBD) and spend (Gamma-Gamma):
log-likelihoods, maximum-likelihood fits and the per-customer expectations, in numpy.

* **BG/NBD** (P. S. Fader, B. G. S. Hardie & K. L. Lee, "'Counting your customers' the easy
  way: an alternative to the Pareto/NBD model", Marketing Science 24(2), 2005): while alive a
  customer buys at Poisson rate lambda ~ Gamma(r, alpha); after each purchase they drop out
  with probability p ~ Beta(a, b). Likelihood eq. (6), P(alive) eq. (13), the conditional
  expectation eq. (10), the unconditional one eq. (9). On the CDNOW sample (2,357 customers,
  weeks, calibration to 1997-09-30) the paper reports r 0.243, alpha 4.414, a 0.793, b 2.426
  and log-likelihood -9582.4 (reproduced in ``tests/test_value.py``).
* **MBG/NBD** (E. P. Batislam, M. Denizel & A. Filiztekin, "Empirical validation and
  comparison of models for customer base analysis", IJRM 24, 2007): as BG/NBD, but a customer
  may also drop out right after the first purchase (so one with no repeat purchase can be dead).
* **Gamma-Gamma** (P. S. Fader & B. G. S. Hardie, "The Gamma-Gamma model of monetary value",
  2013): a customer's transaction values are Gamma(p, nu) with nu ~ Gamma(q, gamma); fitted on
  repeat buyers' mean repeat transaction value. The note reports p 6.25, q 3.74, gamma 15.44 on
  the CDNOW sample. The mean spend is finite only for ``q > 1``.

Every log-likelihood is computed in log space (``gammaln``, ``logaddexp``): Hardie's note on
the BG/NBD likelihood warns that the direct product overflows for large ``x``. Fits run on the
driver on sufficient statistics: customers with identical ``(x, t_x, T)`` are one row with a
weight, so the fit is exact however many customers share a row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import optimize, special

from segmentation.value.hypergeometric import hyp2f1

CountModel = Literal["bg_nbd", "mbg_nbd"]
COUNT_PARAMETERS = ("r", "alpha", "a", "b")
SPEND_PARAMETERS = ("p", "q", "gamma")


@dataclass(frozen=True)
class Fit:
    """A maximum-likelihood fit: estimates, standard errors (from the inverse Hessian of the
    negative log-likelihood at the estimate; NaN where it is not positive definite), the
    log-likelihood, and whether the optimiser converged (with its message)."""

    model: str
    estimates: Mapping[str, float]
    std_errors: Mapping[str, float]
    log_likelihood: float
    converged: bool
    message: str
    observations: int
    """Customers the fit saw (the sum of the weights)."""
    iterations: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __getitem__(self, name: str) -> float:
        return self.estimates[name]


# --- log-likelihoods -----------------------------------------------------------------------


def count_log_likelihood(
    model: CountModel, params: np.ndarray, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray
) -> np.ndarray:
    """Per-row log-likelihood of ``(x, t_x, T)`` under BG/NBD or MBG/NBD (log space)."""
    r, alpha, a, b = params
    base = (
        special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
        + special.gammaln(a + b) - special.gammaln(b) - special.gammaln(a)
    )  # fmt: skip
    if model == "bg_nbd":
        # B(a, b + x) / B(a, b) * ... (alpha + T)^-(r+x) + [x > 0] B(a + 1, b + x - 1) / B(a, b)
        # * ... (alpha + t_x)^-(r+x)   (FHL 2005, eq. 6)
        alive = special.gammaln(a) + special.gammaln(b + x) - special.gammaln(a + b + x)
        alive = alive - (r + x) * np.log(alpha + big_t)
        with np.errstate(divide="ignore", invalid="ignore"):
            dead = (
                special.gammaln(a + 1) + special.gammaln(b + x - 1) - special.gammaln(a + b + x)
                - (r + x) * np.log(alpha + t_x)
            )  # fmt: skip
        dead = np.where(x > 0, dead, -np.inf)
    else:
        # MBG/NBD: B(a, b + x + 1) / B(a, b) (alpha + T)^-(r+x) + B(a + 1, b + x) / B(a, b)
        # (alpha + t_x)^-(r+x)   (Batislam et al. 2007)
        alive = special.gammaln(a) + special.gammaln(b + x + 1) - special.gammaln(a + b + x + 1)
        alive = alive - (r + x) * np.log(alpha + big_t)
        dead = (
            special.gammaln(a + 1) + special.gammaln(b + x) - special.gammaln(a + b + x + 1)
            - (r + x) * np.log(alpha + t_x)
        )  # fmt: skip
    return base + np.logaddexp(alive, dead)


def spend_log_likelihood(params: np.ndarray, x: np.ndarray, mean_value: np.ndarray) -> np.ndarray:
    """Per-customer log-likelihood of the mean repeat transaction value ``mean_value`` over
    ``x`` repeat transactions under Gamma-Gamma (Fader & Hardie 2013, eq. 3)."""
    p, q, gamma = params
    px = p * x
    return (
        special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q) + q * np.log(gamma)
        + (px - 1) * np.log(mean_value) + px * np.log(x) - (px + q) * np.log(gamma + mean_value * x)
    )  # fmt: skip


def count_gradient(
    model: CountModel, params: np.ndarray, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray
) -> np.ndarray:
    """Per-row gradient of :func:`count_log_likelihood` with respect to (r, alpha, a, b),
    shape (4, rows): digammas of the same terms, the two branches weighted by their share of
    the likelihood (so it stays finite wherever the log-likelihood does)."""
    r, alpha, a, b = params
    psi = special.digamma
    shift = 0.0 if model == "bg_nbd" else 1.0
    ll_alive = (
        special.gammaln(a) + special.gammaln(b + x + shift) - special.gammaln(a + b + x + shift)
        - (r + x) * np.log(alpha + big_t)
    )  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        ll_dead = (
            special.gammaln(a + 1) + special.gammaln(b + x - 1 + shift)
            - special.gammaln(a + b + x + shift) - (r + x) * np.log(alpha + t_x)
        )  # fmt: skip
    if model == "bg_nbd":
        ll_dead = np.where(x > 0, ll_dead, -np.inf)
    total = np.logaddexp(ll_alive, ll_dead)
    w_alive = np.exp(ll_alive - total)
    w_dead = np.exp(ll_dead - total)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_dead_b = np.where(w_dead > 0, psi(b + x - 1 + shift), 0.0)
    d_r = psi(r + x) - psi(r) + np.log(alpha) - w_alive * np.log(alpha + big_t)
    d_r = d_r - w_dead * np.log(alpha + t_x)
    d_alpha = r / alpha - (r + x) * (w_alive / (alpha + big_t) + w_dead / (alpha + t_x))
    common = psi(a + b + x + shift)
    d_a = psi(a + b) - psi(a) + w_alive * (psi(a) - common) + w_dead * (psi(a + 1) - common)
    d_b = psi(a + b) - psi(b) + w_alive * (psi(b + x + shift) - common)
    d_b = d_b + w_dead * (d_dead_b - common)
    return np.stack([d_r, d_alpha, d_a, d_b])


def spend_gradient(params: np.ndarray, x: np.ndarray, mean_value: np.ndarray) -> np.ndarray:
    """Per-customer gradient of :func:`spend_log_likelihood` with respect to (p, q, gamma)."""
    p, q, gamma = params
    psi = special.digamma
    px = p * x
    log_rest = np.log(gamma + mean_value * x)
    d_p = x * (psi(px + q) - psi(px) + np.log(mean_value) + np.log(x) - log_rest)
    d_q = psi(px + q) - psi(q) + np.log(gamma) - log_rest
    d_gamma = q / gamma - (px + q) / (gamma + mean_value * x)
    return np.stack([d_p, d_q, d_gamma])


# --- fitting -------------------------------------------------------------------------------


def _hessian(f: Callable[[np.ndarray], float], at: np.ndarray) -> np.ndarray:
    """Central-difference Hessian of ``f`` at ``at`` (steps relative to each parameter)."""
    n = len(at)
    h = 1e-4 * np.maximum(np.abs(at), 1e-3)
    out = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            ei, ej = np.eye(n)[i] * h[i], np.eye(n)[j] * h[j]
            value = (f(at + ei + ej) - f(at + ei - ej) - f(at - ei + ej) + f(at - ei - ej)) / (
                4 * h[i] * h[j]
            )
            out[i, j] = out[j, i] = value
    return out


def _std_errors(neg_ll: Callable[[np.ndarray], float], at: np.ndarray) -> np.ndarray:
    hess = _hessian(neg_ll, at)
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        return np.full(len(at), np.nan)
    diag = np.diag(cov)
    return np.where(diag > 0, np.sqrt(np.abs(diag)), np.nan)


def maximise(
    model: str,
    names: tuple[str, ...],
    log_likelihood: Callable[[np.ndarray], float],
    *,
    start: np.ndarray,
    observations: int,
    gradient: Callable[[np.ndarray], np.ndarray] | None = None,
    max_iter: int = 2000,
) -> Fit:
    """Maximise ``log_likelihood`` over positive parameters (optimised as logs with L-BFGS-B,
    polished with Nelder-Mead from there when L-BFGS-B did not end at a stationary point);
    standard errors from the Hessian in the parameters' own units. ``converged``: an
    optimiser reported success, or stopped at a stationary point: the gradient with respect to
    every log-parameter is at most 1e-6 of the log-likelihood."""

    def neg(log_params: np.ndarray) -> float:
        value = log_likelihood(np.exp(log_params))
        return -value if np.isfinite(value) else 1e300

    def neg_grad(log_params: np.ndarray) -> np.ndarray:
        # d(-LL)/d(log theta) = -theta dLL/dtheta (the optimiser works on the logs)
        params = np.exp(log_params)
        if gradient is None:
            return optimize.approx_fprime(log_params, neg, 1e-7)
        g = -params * gradient(params)
        return np.where(np.isfinite(g), g, 0.0)

    def stationary(at: np.ndarray, value: float) -> bool:
        # Moving any log-parameter by 1e-3 changes the log-likelihood by at most 1e-9 of it.
        return bool(np.all(np.abs(neg_grad(at)) <= 1e-6 * max(1.0, abs(value))))

    best = optimize.minimize(
        neg, np.log(start), jac=neg_grad if gradient is not None else None, method="L-BFGS-B",
        options={"maxiter": max_iter, "ftol": 1e-13, "gtol": 1e-9},
    )  # fmt: skip
    message, iterations = f"L-BFGS-B: {best.message}", int(best.nit)
    ok = stationary(best.x, float(best.fun))
    if not ok:
        polished = optimize.minimize(
            neg, best.x, method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 20 * max_iter},
        )  # fmt: skip
        message += f"; Nelder-Mead: {polished.message}"
        iterations += int(polished.nit)
        if polished.fun <= best.fun:
            best = polished
        ok = stationary(best.x, float(best.fun))
    estimates = np.exp(best.x)
    ll = float(log_likelihood(estimates))
    converged = ok and np.isfinite(ll)
    ses = _std_errors(lambda p: -log_likelihood(p), estimates)
    return Fit(
        model=model, estimates=dict(zip(names, map(float, estimates), strict=True)),
        std_errors=dict(zip(names, map(float, ses), strict=True)), log_likelihood=ll,
        converged=converged, message=message, observations=observations,
        iterations=iterations,
    )  # fmt: skip


def fit_counts(
    model: CountModel, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray, weights: np.ndarray
) -> Fit:
    """BG/NBD or MBG/NBD by maximum likelihood on grouped ``(x, t_x, T)`` rows with
    ``weights`` customers each."""
    x, t_x, big_t, w = (np.asarray(v, dtype=np.float64) for v in (x, t_x, big_t, weights))

    def ll(params: np.ndarray) -> float:
        return float(np.sum(w * count_log_likelihood(model, params, x, t_x, big_t)))

    def grad(params: np.ndarray) -> np.ndarray:
        return np.asarray(count_gradient(model, params, x, t_x, big_t) @ w)

    scale = max(float(np.average(big_t, weights=w)), 1e-6)
    return maximise(model, COUNT_PARAMETERS, ll, start=np.array([1.0, scale, 1.0, 1.0]),
                    observations=int(w.sum()), gradient=grad)  # fmt: skip


def fit_spend(x: np.ndarray, mean_value: np.ndarray, weights: np.ndarray | None = None) -> Fit:
    """Gamma-Gamma by maximum likelihood on repeat buyers (``x >= 1``, ``mean_value > 0``)."""
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(mean_value, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)

    def ll(params: np.ndarray) -> float:
        return float(np.sum(w * spend_log_likelihood(params, x, m)))

    def grad(params: np.ndarray) -> np.ndarray:
        return np.asarray(spend_gradient(params, x, m) @ w)

    start = np.array([1.0, 2.0, max(float(np.average(m, weights=w)), 1e-6)])
    return maximise("gamma_gamma", SPEND_PARAMETERS, ll, start=start, observations=int(w.sum()),
                    gradient=grad)  # fmt: skip


# --- expectations --------------------------------------------------------------------------


def p_alive(model: CountModel, fit: Mapping[str, float], x, t_x, big_t) -> np.ndarray:
    """P(alive | x, t_x, T) (FHL 2005 eq. 13; Batislam et al. for MBG/NBD)."""
    r, alpha, a, b = (fit[k] for k in COUNT_PARAMETERS)
    x, t_x, big_t = (np.asarray(v, dtype=np.float64) for v in (x, t_x, big_t))
    # log of the odds of having died: a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x)
    denom = b + x - 1 if model == "bg_nbd" else b + x
    with np.errstate(divide="ignore", invalid="ignore"):
        log_odds = (
            np.log(a) - np.log(denom) + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
        )
    if model == "bg_nbd":
        log_odds = np.where(x > 0, log_odds, -np.inf)
    return 1.0 / (1.0 + np.exp(np.minimum(log_odds, 700.0)))


def expected_purchases(
    model: CountModel, fit: Mapping[str, float], t: float, x, t_x, big_t
) -> np.ndarray:
    """E[purchases in (T, T + t] | x, t_x, T] (FHL 2005 eq. 10; MBG/NBD alike), through the
    Euler-transformed hypergeometric function (``hypergeometric``): the factor
    ``((alpha + T) / (alpha + T + t))^(r + x) 2F1(...)`` becomes
    ``(1 - z)^(a - 1) 2F1(A, a - 1; c; z)``, with no power of ``x``."""
    r, alpha, a, b = (fit[k] for k in COUNT_PARAMETERS)
    x, t_x, big_t = (np.asarray(v, dtype=np.float64) for v in (x, t_x, big_t))
    z = t / (alpha + big_t + t)
    if model == "bg_nbd":
        # 2F1(r + x, b + x; a + b + x - 1; z) (1 - z)^(r + x)
        upper, c = a + b - 1 - r, a + b + x - 1
    else:
        # MBG/NBD (as lifetimes implements Batislam et al.): 2F1(r + x, b + x + 1; a + b + x; z)
        # (1 - z)^(r + x)
        upper, c = a + b - r, a + b + x
    tail = (1 - z) ** (a - 1) * hyp2f1(upper, a - 1, c, z)
    return c / (a - 1) * (1 - tail) * p_alive(model, fit, x, t_x, big_t)


def expected_purchases_new(
    model: CountModel, fit: Mapping[str, float], t: np.ndarray
) -> np.ndarray:
    """E[X(t)]: repeat purchases of a new customer in ``t`` periods after the first purchase
    (FHL 2005 eq. 9; for MBG/NBD Batislam et al.), the tracking curve's building block."""
    r, alpha, a, b = (fit[k] for k in COUNT_PARAMETERS)
    t = np.asarray(t, dtype=np.float64)
    z = t / (alpha + t)
    if model == "bg_nbd":
        # (alpha / (alpha + t))^r 2F1(r, b; a + b - 1; z) = (1 - z)^(a - 1) 2F1(a + b - 1 - r,
        # a - 1; a + b - 1; z)
        tail = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b - 1, z)
        return (a + b - 1) / (a - 1) * (1 - tail)
    # MBG/NBD: b / (a - 1) [1 - (alpha / (alpha + t))^r 2F1(r, b + 1; a + b; z)]
    tail = (1 - z) ** (a - 1) * hyp2f1(a + b - r, a - 1, a + b, z)
    return b / (a - 1) * (1 - tail)


def expected_order_value(fit: Mapping[str, float], x, mean_value) -> np.ndarray:
    """E[transaction value | x, mean repeat value] under Gamma-Gamma (Fader & Hardie 2013,
    eq. 5): a weighted mean of the population mean ``p gamma / (q - 1)`` and the customer's own
    mean, weight ``p x / (p x + q - 1)``. Customers with no repeat purchase (or no usable
    mean) get the population mean."""
    p, q, gamma = (fit[k] for k in SPEND_PARAMETERS)
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(mean_value, dtype=np.float64)
    population = p * gamma / (q - 1)
    usable = (x > 0) & np.isfinite(m) & (m > 0)
    own = np.where(usable, m, 0.0)
    weight = np.where(usable, p * x / (p * x + q - 1), 0.0)
    return (1 - weight) * population + weight * own
