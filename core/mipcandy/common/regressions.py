"""Rational (quotient) regression and the validation-score forecast built on it.

Two layers:

* :func:`quotient_regression` / :func:`quotient_derivative` / :func:`quotient_bounds` are the general building
  blocks: the linearised least squares fit of ``y ≈ P(x) / Q(x)``, its derivative, and where it stays within
  bounds, with descending ``np.polyval`` coefficient arrays.
* :func:`predict_score` forecasts where a "higher is better" validation score is heading. It does *not* fit a free
  ``m = n`` quotient: with few points and a flat tail that fit is ill-posed (its leading coefficients are noise) and
  its asymptote ``p_m / q_n`` can leave the metric's range. It fits instead the saturating rational family

      y(t) = L − D / (1 + k·t/p)^p,   D > 0, k > 0, p ∈ {1, 2, 3, 4, 6, …, 64}

  (``deg P = deg Q = p``, with a single p-fold pole at ``t = −p/k < 0``), which is increasing on ``t ≥ 0``, has the
  finite asymptote ``L``, and runs from the hyperbola ``p = 1`` (a slow 1/t tail) towards the exponential
  ``L − D·e^{−k·t}`` as ``p`` grows. Only the hyperbola would be the textbook ``(a + b·x) / (1 + c·x)``, but on
  exponential-like curves its fat tail overshoots the asymptote (past 1 for some Dice curves capped at 0.85) and
  puts the plateau an order of magnitude too late; letting the data pick ``p`` fixes both.

  For each ``(k, p)`` on a grid, ``L`` and ``D`` have a closed-form least squares solution, with ``L`` restricted to
  the metric's bounds (the profiled error is a convex quadratic in ``L``, so the bounded optimum is the clipped one).
  That makes the fit global (no starting point, no divergence), well-posed, and bounded by construction. The grid
  also gives a profile confidence interval for ``L``, which is what decides whether the asymptote is identifiable.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["IllConditionedFitError", "ScorePrediction", "predict_score", "quotient_bounds", "quotient_derivative",
           "quotient_regression"]

# Pole orders p of the saturating family (see the module docstring).
_ORDERS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
#: Fewest points :func:`predict_score` fits, whatever the warm-up: 4 unknowns (L, D, k, p) need some redundancy.
MIN_POINTS = 8
_RATES_PER_DECADE = 24
# Rates k (per observed window) span from "a straight line over the window" to "a step before the second point".
_SLOWEST_RATE = 1e-2
# Profile-likelihood threshold: SSE ≤ SSE_min · (1 + _PROFILE_F / dof) is an approximate 95 % region (F(1, ∞) ≈ 3.84).
_PROFILE_F = 4.0
# A fit whose residual variance exceeds this multiple of the noise variance misses structure in the curve.
_MAX_MISFIT = 2.0
# Running-mean width (epochs) for locating the steepest rise of a delayed start.
_ONSET_WINDOW = 5


class IllConditionedFitError(ValueError):
    """The linearised quotient system is too ill-conditioned for its coefficients to mean anything."""


def _as_vector(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def quotient_regression(x: ArrayLike, y: ArrayLike, m: int, n: int, *,
                        max_condition: float = 1e8) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``y ≈ P(x) / Q(x)`` with ``deg P = m``, ``deg Q = n`` and ``Q(0) = 1`` by linearised least squares.

    Multiplying out gives the linear system ``P(x) − y·(Q(x) − 1) = y``. It is solved on ``x`` scaled to
    ``max|x| = 1`` with unit-norm columns, so long epoch ranges do not blow up the powers, and
    :class:`IllConditionedFitError` is raised when that system's condition number exceeds ``max_condition``
    (default 1e8, about 1/√ε: past it the solve loses more than half its digits). An ``m = n`` fit of a flat curve
    fails here, because ``y·x^j`` and ``x^j`` are collinear: fit lower degrees or more varied points. Returns
    ``(a, b)``, descending ``np.polyval`` arrays ``a = [p_m … p_0]`` and ``b = [q_n … q_1, 1]``.

    A well-conditioned system is not a meaningful forecast: the fit minimises the linearised residual ``Q·y − P``,
    not ``y − P/Q``, nothing keeps the poles of ``P/Q`` off the data, and on a noisy Dice curve capped at 0.85 the
    asymptote ``p_m / q_n`` can land past 1. Use :func:`predict_score` to extrapolate a score.
    """
    xs, ys = _as_vector("x", x), _as_vector("y", y)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must have the same length, got {xs.size} and {ys.size}")
    if m < 0 or n < 0:
        raise ValueError(f"degrees must be non-negative, got m={m}, n={n}")
    unknowns = m + n + 1
    if xs.size < unknowns:
        raise ValueError(f"a degree ({m}, {n}) quotient has {unknowns} coefficients, but only {xs.size} points "
                         f"were given: pass more points or lower the degrees")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("x and y must be finite: drop NaN or infinite points before fitting")
    scale = float(np.max(np.abs(xs))) or 1.0
    u = xs / scale
    powers = u[:, None] ** np.arange(max(m, n) + 1)
    design = np.hstack([powers[:, :m + 1], -ys[:, None] * powers[:, 1:n + 1]])
    norms = np.linalg.norm(design, axis=0)
    if not norms.all():
        raise IllConditionedFitError(f"degree ({m}, {n}) quotient: a column of the system is zero (all x = 0, "
                                     f"or y = 0 where x ≠ 0); the coefficients are not determined")
    normalised = design / norms
    condition = float(np.linalg.cond(normalised))
    if not condition <= max_condition:
        raise IllConditionedFitError(f"degree ({m}, {n}) quotient on {xs.size} points: condition number "
                                     f"{condition:.3g} exceeds {max_condition:.3g}; lower the degrees or fit more "
                                     f"(and more varied) points")
    solution = np.linalg.lstsq(normalised, ys, rcond=None)[0] / norms
    rescale = scale ** -np.arange(max(m, n) + 1)
    a = (solution[:m + 1] * rescale[:m + 1])[::-1]
    b = np.concatenate([(solution[m + 1:] * rescale[1:n + 1])[::-1], [1.0]])
    return a, b


def _or_zero(c: np.ndarray) -> np.ndarray:
    """``c``, or the zero polynomial where numpy left no coefficients at all."""
    return c if c.size else np.zeros(1)


def quotient_derivative(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Derivative of ``P/Q`` as another quotient ``(P'·Q − P·Q', Q²)`` (descending ``np.polyval`` arrays).

    Its sign is the sign of the first array, so it tells where the fitted curve rises.
    """
    p, q = _as_vector("a", a), _as_vector("b", b)
    if not (p.size and q.size):
        raise ValueError("quotient coefficients must not be empty")
    numerator = np.polysub(np.polymul(_or_zero(np.polyder(p)), q), np.polymul(p, _or_zero(np.polyder(q))))
    return _or_zero(np.trim_zeros(numerator, "f")), np.polymul(q, q)


def quotient_bounds(a: ArrayLike, b: ArrayLike, lower: float, upper: float, *, x_start: float = 0,
                    x_stop: float = 1e4, x_step: float = 0.01) -> tuple[float, float] | None:
    """The first and the last x of the grid ``x_start, x_start + x_step, … < x_stop`` where
    ``lower < P(x) / Q(x) < upper``, or ``None`` when no grid point is inside.

    It tells from when (and until when) a fitted curve lies in a band, e.g. within 1 % of its asymptote. Poles
    (``Q(x) = 0``) count as outside. Between the two x the curve may leave the band; use a finer grid or
    :func:`quotient_derivative` to check that it is monotonic there.
    """
    p, q = _as_vector("a", a), _as_vector("b", b)
    if not (p.size and q.size):
        raise ValueError("quotient coefficients must not be empty")
    if not (math.isfinite(x_start) and math.isfinite(x_stop) and x_step > 0 and x_stop > x_start):
        raise ValueError(f"need finite x_start < x_stop and x_step > 0, got x_start={x_start}, x_stop={x_stop}, "
                         f"x_step={x_step}")
    if not lower < upper:
        raise ValueError(f"need lower < upper, got lower={lower}, upper={upper}")
    x = x_start + x_step * np.arange(math.ceil((x_stop - x_start) / x_step))
    x = x[x < x_stop]
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.polyval(p, x) / np.polyval(q, x)
    inside = np.flatnonzero((y > lower) & (y < upper))
    return (float(x[inside[0]]), float(x[inside[-1]])) if inside.size else None


@dataclass(frozen=True)
class ScorePrediction:
    """A validation-score forecast (see :func:`predict_score`).

    ``max_score`` is the fitted asymptote and ``max_score_interval`` its nominal 95 % profile interval (80–90 %
    coverage measured on noisy exponentials, which the family only approximates), both inside the bounds.
    ``epoch`` is where the fitted curve has covered ``reach`` of its rise (it may lie in the past). ``r2`` and
    ``residual_std`` describe the fit; ``order``, ``rate``, ``gap`` and ``origin`` are the model
    ``score(e) = max_score − gap / (1 + rate·(e − origin)/order)^order`` with ``rate`` per epoch.
    """

    max_score: float
    max_score_interval: tuple[float, float]
    epoch: float
    r2: float
    residual_std: float
    order: int
    rate: float
    gap: float
    origin: float

    def score_at(self, epochs: ArrayLike) -> np.ndarray:
        """The fitted curve at ``epochs`` (for plots, or to compare with what training then did)."""
        t = np.asarray(epochs, dtype=np.float64) - self.origin
        return self.max_score - self.gap * (1.0 + self.rate * t / self.order) ** -self.order

    def eta_seconds(self, current_epoch: float, seconds_per_epoch: float) -> float:
        """Estimated seconds until ``epoch`` is reached; 0 once it is behind. Cap it at the run's end yourself."""
        if not (math.isfinite(seconds_per_epoch) and seconds_per_epoch >= 0):
            raise ValueError(f"seconds_per_epoch must be finite and >= 0, got {seconds_per_epoch}")
        return max(0.0, self.epoch - current_epoch) * seconds_per_epoch


@dataclass(frozen=True)
class _GridFit:
    """Least-squares fits of ``y ≈ L − D·g`` for every ``(rate, order)`` of a grid (flattened arrays).

    For fixed ``g`` the error profiled over ``D`` is ``unbounded_sse + curvature·(L − unbounded_asymptote)²``, so
    the bounded optimum is the clipped asymptote and every grid point gives the ``L`` range within any error level.
    """

    unbounded_asymptote: np.ndarray
    unbounded_sse: np.ndarray
    curvature: np.ndarray
    asymptote: np.ndarray
    sse: np.ndarray
    gap: np.ndarray
    rate: np.ndarray
    order: np.ndarray

    def asymptote_range(self, max_sse: float) -> tuple[float, float]:
        """Smallest and largest ``L`` that some grid point fits with an error of at most ``max_sse``."""
        inside = self.unbounded_sse <= max_sse
        half = np.sqrt((max_sse - self.unbounded_sse[inside]) / self.curvature[inside])
        centre = self.unbounded_asymptote[inside]
        return float(np.min(centre - half)), float(np.max(centre + half))


def _fit_grid(t: np.ndarray, y: np.ndarray, rates: np.ndarray, lower: float, upper: float) -> _GridFit:
    rate, order = (v.ravel() for v in np.meshgrid(rates, np.asarray(_ORDERS, dtype=np.float64), indexing="ij"))
    g = (1.0 + (rate / order)[:, None] * t) ** -order[:, None]
    g_sum, g_squares = g.sum(axis=1), np.einsum("ij,ij->i", g, g)
    g_y = g @ y
    spread = g_squares - g_sum ** 2 / t.size  # Σ(g − ḡ)²: near 0, g is collinear with the constant column
    usable = spread > 1e-12 * g_squares
    spread = np.where(usable, spread, 1.0)
    slope = (g_y - g_sum * y.mean()) / spread
    unbounded = y.mean() - slope * g_sum / t.size
    unbounded_sse = np.where(usable, np.maximum(np.sum((y - y.mean()) ** 2) - slope ** 2 * spread, 0.0), np.inf)
    curvature = t.size * spread / g_squares
    asymptote = np.clip(unbounded, lower, upper)
    sse = unbounded_sse + curvature * (asymptote - unbounded) ** 2
    gap = (asymptote * g_sum - g_y) / g_squares
    return _GridFit(unbounded, unbounded_sse, curvature, asymptote, sse, gap, rate, order)


def predict_score(scores: ArrayLike, *, epochs: ArrayLike | None = None,
                  bounds: Sequence[float] = (0.0, 1.0), warmup: int = 20, reach: float = 0.99,
                  min_r2: float = 0.5, tolerance: float = 0.1) -> ScorePrediction | None:
    """Forecast the best score a run will reach and when, or ``None`` when the trajectory does not support one.

    ``scores`` are the raw validation scores, higher is better, measured at ``epochs`` (default ``0, 1, 2, …``).
    Pass them unsmoothed: least squares already averages the noise, while an EMA adds lag and correlated residuals.
    ``bounds`` is the metric's range, ``(0, 1)`` for Dice or ``(-inf, 0)`` for a negated loss; a score outside it is
    an error. Non-finite scores (a diverged epoch) are skipped. The model is fitted as the module docstring says,
    with its asymptote restricted to ``bounds``. Let ``slack = tolerance × (max(scores) − min(scores))``. ``None``
    ("no prediction") is returned when

    * fewer than ``max(warmup, MIN_POINTS)`` finite scores are available;
    * the best fit is not increasing: a flat or falling trajectory has no maximum ahead of it;
    * the fit explains less than ``min_r2`` of the score variance (a trend that the noise swamps, or none);
    * the fit misses structure: its residual variance exceeds twice the noise variance estimated from successive
      differences, as for a curve that peaks and declines (overfitting) or jumps again after a schedule change;
    * the asymptote is not identifiable: without the bounds, its 95 % profile interval is wider than ``2·slack``.
      This is how a still-rising (e.g. linear) trajectory shows up: fits nearly as good as the best one degenerate
      into straight lines, whose linear system for ``L, D`` is ill-conditioned, and put the asymptote anywhere;
    * the data put the asymptote out of range: that interval lies more than ``slack`` beyond a bound. An asymptote
      is only ever clamped into ``bounds`` from within ``slack`` of them, never from further away.

    The saturating model is concave, so a delayed (sigmoid-like) start fails the lack-of-fit check. When the whole
    trajectory fails, the fit is retried once from just past its steepest rise, provided that keeps at least half of
    the points; ``origin`` then says where the fitted part starts.

    Otherwise ``epoch`` is where the fitted curve has covered ``reach`` (default 99 %) of its rise ``D`` from
    ``origin``: a fixed target, so the ETC settles as training goes on (a fraction of the *remaining* gap would
    recede forever).
    """
    y = _as_vector("scores", scores)
    x = np.arange(y.size, dtype=np.float64) if epochs is None else _as_vector("epochs", epochs)
    if x.shape != y.shape:
        raise ValueError(f"epochs and scores must have the same length, got {x.size} and {y.size}")
    if not (np.isfinite(x).all() and np.all(np.diff(x) > 0)):
        raise ValueError("epochs must be finite and strictly increasing")
    lower, upper = (float(v) for v in bounds)
    if not lower < upper:
        raise ValueError(f"bounds must be (lower, upper) with lower < upper, got {tuple(bounds)}")
    if not (0.0 < reach < 1.0 and tolerance > 0.0):
        raise ValueError(f"reach must lie in (0, 1) and tolerance be positive, got reach={reach}, "
                         f"tolerance={tolerance}")
    finite = np.isfinite(y)
    x, y = x[finite], y[finite]
    outside = np.flatnonzero((y < lower) | (y > upper))
    if outside.size:
        i = outside[0]
        raise ValueError(f"score {y[i]:.6g} at epoch {x[i]:g} lies outside bounds ({lower:g}, {upper:g}): "
                         f"pass the metric's range as bounds (e.g. (-inf, 0) for a negated loss)")
    if y.size < max(warmup, MIN_POINTS):
        return None
    criteria = {"reach": reach, "min_r2": min_r2, "tolerance": tolerance}
    prediction = _forecast(x, y, lower, upper, **criteria)
    onset = _onset(y)
    if prediction is None and 0 < onset <= y.size - max(MIN_POINTS, y.size // 2):
        prediction = _forecast(x[onset:], y[onset:], lower, upper, **criteria)
    return prediction


def _onset(y: np.ndarray) -> int:
    """Index just past the steepest rise of a running mean: where a delayed (sigmoid-like) start turns concave."""
    smooth = np.convolve(y, np.ones(_ONSET_WINDOW) / _ONSET_WINDOW, mode="valid")
    return int(np.argmax(np.diff(smooth))) + (_ONSET_WINDOW + 1) // 2


def _forecast(x: np.ndarray, y: np.ndarray, lower: float, upper: float, *, reach: float, min_r2: float,
              tolerance: float) -> ScorePrediction | None:
    """Fit the saturating family to every point given and apply :func:`predict_score`'s checks."""
    span = float(x[-1] - x[0])
    t = (x - x[0]) / span
    fastest = 1e3 / float(np.min(np.diff(t)))
    rates = np.geomspace(_SLOWEST_RATE, fastest, int(math.log10(fastest / _SLOWEST_RATE) * _RATES_PER_DECADE) + 1)
    grid = _fit_grid(t, y, rates, lower, upper)
    best = int(np.argmin(grid.sse))
    sse, total = float(grid.sse[best]), float(np.sum((y - y.mean()) ** 2))
    if not (grid.gap[best] > 0 and total > 0 and 1.0 - sse / total >= min_r2):
        return None
    # lack of fit: residual variance against the model-free noise variance of successive differences
    noise = float(np.sum(np.diff(y) ** 2)) / (2 * (y.size - 1))
    if sse / (y.size - 4) > _MAX_MISFIT * noise:
        return None
    threshold = 1.0 + _PROFILE_F / (y.size - 4)
    slack = tolerance * float(y.max() - y.min())
    free_low, free_high = grid.asymptote_range(float(np.min(grid.unbounded_sse)) * threshold)
    if free_high - free_low > 2.0 * slack or free_low > upper + slack or free_high < lower - slack:
        return None
    low, high = grid.asymptote_range(sse * threshold)
    order, rate = float(grid.order[best]), float(grid.rate[best])
    t_reach = order * ((1.0 - reach) ** (-1.0 / order) - 1.0) / rate
    return ScorePrediction(max_score=float(grid.asymptote[best]),
                           max_score_interval=(max(low, lower), min(high, upper)),
                           epoch=float(x[0] + t_reach * span), r2=1.0 - sse / total,
                           residual_std=math.sqrt(sse / (y.size - 4)), order=int(order), rate=rate / span,
                           gap=float(grid.gap[best]), origin=float(x[0]))
