"""Quotient regression and the validation-score forecast, on seeded synthetic score curves."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mipcandy.common.regressions import (
    MIN_POINTS,
    IllConditionedFitError,
    ScorePrediction,
    predict_score,
    quotient_bounds,
    quotient_derivative,
    quotient_regression,
)

DICE = (0.0, 1.0)
NEGATED_LOSS = (-math.inf, 0.0)


def saturating(epochs: np.ndarray, cap: float, start: float, tau: float) -> np.ndarray:
    """A score that rises from ``start`` towards ``cap`` with time constant ``tau`` epochs."""
    return cap - (cap - start) * np.exp(-epochs / tau)


def reach_epoch(tau: float, reach: float = 0.99) -> float:
    """Where :func:`saturating` has covered ``reach`` of its rise: the truth ``predict_score``'s epoch estimates."""
    return -tau * math.log(1.0 - reach)


def noisy(curve: np.ndarray, sigma: float, seed: int, bounds: tuple[float, float] = DICE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(curve + sigma * rng.standard_normal(curve.shape), *bounds)


# --- quotient_regression / quotient_derivative ---------------------------------------------------------------------

def test_quotient_regression_recovers_an_exact_rational_over_long_epoch_ranges() -> None:
    # x up to 300 makes the raw Vandermonde columns span 1e5: the fit must scale x to stay accurate
    a, b = np.array([0.5, 2.0, 0.3]), np.array([0.02, 0.4, 1.0])
    x = np.linspace(0.0, 300.0, 50)
    fitted_a, fitted_b = quotient_regression(x, np.polyval(a, x) / np.polyval(b, x), 2, 2)
    np.testing.assert_allclose(fitted_a, a, rtol=1e-7)
    np.testing.assert_allclose(fitted_b, b, rtol=1e-7)


def test_quotient_regression_solves_the_linearised_least_squares_problem() -> None:
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 3.0, 40)
    y = (1.0 + 2.0 * x) / (1.0 + 0.5 * x) + 0.05 * rng.standard_normal(x.size)
    a, b = quotient_regression(x, y, 2, 1)
    # independent reference: the unscaled system [1, x, x², −y·x] · θ = y solved directly
    design = np.column_stack([np.ones_like(x), x, x ** 2, -y * x])
    theta = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(a, theta[2::-1], rtol=1e-8)
    np.testing.assert_allclose(b, [theta[3], 1.0], rtol=1e-8)


def test_quotient_regression_without_denominator_is_a_polynomial_fit() -> None:
    rng = np.random.default_rng(1)
    x = np.arange(30.0)
    y = 0.01 * x ** 2 - x + 3.0 + rng.standard_normal(x.size)
    a, b = quotient_regression(x, y, 2, 0)
    np.testing.assert_allclose(a, np.polyfit(x, y, 2), rtol=1e-8)
    np.testing.assert_array_equal(b, [1.0])


def test_quotient_regression_refuses_an_undetermined_system() -> None:
    # on a constant curve y·x and x are collinear: the m = n fit of a flat trajectory is meaningless
    x = np.arange(30.0)
    with pytest.raises(IllConditionedFitError, match=r"condition number .* lower the degrees"):
        quotient_regression(x, np.full(x.size, 0.8), 1, 1)


@pytest.mark.parametrize(("x", "y", "m", "n", "message"), [
    (np.arange(5.0), np.arange(5.0), 3, 3, r"7 coefficients, but only 5 points"),
    (np.arange(5.0), np.arange(4.0), 1, 1, r"same length"),
    (np.arange(5.0), np.array([0.0, 1.0, np.nan, 3.0, 4.0]), 1, 1, r"finite"),
    (np.arange(5.0), np.arange(5.0), -1, 1, r"non-negative"),
    (np.zeros((2, 3)), np.zeros((2, 3)), 1, 1, r"one-dimensional"),
])
def test_quotient_regression_rejects_bad_input(x: np.ndarray, y: np.ndarray, m: int, n: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        quotient_regression(x, y, m, n)


def test_quotient_derivative_matches_finite_differences() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=4), np.concatenate([rng.uniform(0.1, 1.0, size=3), [1.0]])  # no pole on x ≥ 0
    x, h = np.linspace(0.0, 5.0, 21), 1e-5

    def quotient(v: np.ndarray) -> np.ndarray:
        return np.polyval(a, v) / np.polyval(b, v)

    numerator, denominator = quotient_derivative(a, b)
    np.testing.assert_allclose(np.polyval(numerator, x) / np.polyval(denominator, x),
                               (quotient(x + h) - quotient(x - h)) / (2 * h), rtol=1e-6, atol=1e-8)


def test_quotient_derivative_of_constant_parts() -> None:
    numerator, denominator = quotient_derivative([3.0], [2.0, 1.0])  # 3 / (2x + 1) -> -6 / (2x + 1)²
    np.testing.assert_allclose(numerator, [-6.0])
    np.testing.assert_allclose(denominator, [4.0, 4.0, 1.0])
    numerator, _ = quotient_derivative([2.0, 5.0], [1.0])
    np.testing.assert_allclose(numerator, [2.0])
    numerator, _ = quotient_derivative([4.0, 2.0], [2.0, 1.0])  # (4x + 2) / (2x + 1) = 2
    np.testing.assert_allclose(numerator, [0.0])


# --- predict_score: curves it must forecast ------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("epochs", "tau", "sigma"), [(60, 12.0, 0.005), (60, 12.0, 0.02), (100, 20.0, 0.01),
                                                      (150, 25.0, 0.02)])
def test_saturating_exponential_forecast(epochs: int, tau: float, sigma: float, seed: int) -> None:
    x = np.arange(float(epochs))
    truth = saturating(x, 0.85, 0.15, tau)
    prediction = predict_score(noisy(truth, sigma, seed))
    assert prediction is not None
    assert abs(prediction.max_score - 0.85) <= 0.03
    low, high = prediction.max_score_interval
    assert 0.0 <= low <= prediction.max_score <= high <= 1.0
    assert 0.75 <= prediction.epoch / reach_epoch(tau) <= 1.5
    assert prediction.r2 > 0.9
    assert 0.6 * sigma <= prediction.residual_std <= 1.5 * sigma
    assert np.max(np.abs(prediction.score_at(x) - truth)) <= 3 * sigma + 0.01


def test_asymptote_interval_covers_the_cap_on_most_runs() -> None:
    # nominally 95 %; the family only approximates an exponential, so demand 75 % (measured: 80-90 %)
    x = np.arange(100.0)
    intervals = [predict_score(noisy(saturating(x, 0.85, 0.15, 15.0), 0.02, seed)) for seed in range(20)]
    covered = [p is not None and p.max_score_interval[0] <= 0.85 <= p.max_score_interval[1] for p in intervals]
    assert sum(covered) >= 15


def test_reference_failure_dice_capped_at_085_stays_in_range_at_every_epoch() -> None:
    # the reference forecast a Dice of 1.39 for such a curve; the trainer asks after every validation epoch
    x = np.arange(100.0)
    for seed in range(3):
        scores = noisy(saturating(x, 0.85, 0.1, 8.0), 0.015, seed)
        for seen in range(20, 101):
            prediction = predict_score(scores[:seen])
            if prediction is None:
                assert seen < 40, f"seed {seed}: no forecast after {seen} epochs of a saturated curve"
                continue
            assert prediction.max_score_interval[1] <= 1.0
            assert abs(prediction.max_score - 0.85) <= (0.05 if seen < 60 else 0.025), (seed, seen)


def test_plateau_after_a_fast_rise_forecasts_the_plateau_as_reached() -> None:
    x = np.arange(60.0)
    scores = noisy(np.where(x < 3, 0.3, 0.8), 0.01, 3)
    prediction = predict_score(scores)
    assert prediction is not None
    assert abs(prediction.max_score - 0.8) <= 0.02
    assert prediction.epoch < 30
    assert prediction.eta_seconds(current_epoch=59, seconds_per_epoch=120.0) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delayed_onset_is_fitted_from_its_steepest_rise(seed: int) -> None:
    # Dice stuck near 0 for ~10 epochs, then a sigmoid rise: the concave model only fits the part after the onset
    x = np.arange(100.0)
    prediction = predict_score(noisy(0.05 + 0.8 / (1.0 + np.exp(-(x - 10.0) / 3.0)), 0.01, seed))
    assert prediction is not None
    assert 5.0 <= prediction.origin <= 15.0
    assert abs(prediction.max_score - 0.85) <= 0.02
    assert 0.75 <= prediction.epoch / (10.0 + 3.0 * math.log(99.0)) <= 1.5  # the sigmoid's 99 % point


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_negated_loss_forecast(seed: int) -> None:
    x = np.arange(80.0)
    scores = noisy(-(0.3 + 1.2 * np.exp(-x / 10.0)), 0.02, seed, NEGATED_LOSS)
    prediction = predict_score(scores, bounds=NEGATED_LOSS)
    assert prediction is not None
    assert abs(prediction.max_score + 0.3) <= 0.03
    assert prediction.max_score_interval[1] <= 0.0


def test_asymptote_at_the_bound_is_clamped_only_from_within_the_slack() -> None:
    # the loss really goes to 0: the unbounded fit lands a hair above 0, and clamping it there is right
    x = np.arange(60.0)
    scores = noisy(-1.2 * np.exp(-x / 10.0), 0.001, 4, NEGATED_LOSS)
    prediction = predict_score(scores, bounds=NEGATED_LOSS)
    assert prediction is not None
    assert -0.02 <= prediction.max_score <= 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_asymptote_beyond_the_bound_is_rejected_not_clamped(seed: int) -> None:
    # a "negated loss" heading for +0.3: every observed score is still below 0, but the data say 0.3
    x = np.arange(26.0)
    scores = saturating(x, 0.3, -0.9, 20.0) + 0.001 * np.random.default_rng(seed).standard_normal(x.size)
    assert scores.max() < 0.0
    unbounded = predict_score(scores, bounds=(-math.inf, math.inf))
    assert unbounded is not None and unbounded.max_score > 0.25
    assert predict_score(scores, bounds=NEGATED_LOSS) is None


def test_validation_every_few_epochs_forecasts_in_epochs() -> None:
    x = np.arange(0.0, 150.0, 5.0)
    prediction = predict_score(noisy(saturating(x, 0.9, 0.2, 20.0), 0.01, 5), epochs=x)
    assert prediction is not None
    assert abs(prediction.max_score - 0.9) <= 0.03
    assert 0.75 <= prediction.epoch / reach_epoch(20.0) <= 1.5
    assert prediction.origin == 0.0


def test_diverged_epochs_are_skipped() -> None:
    x = np.arange(60.0)
    scores = noisy(saturating(x, 0.85, 0.15, 12.0), 0.01, 6)
    damaged = scores.copy()
    damaged[[7, 30, 41]] = [np.nan, np.inf, -np.inf]
    kept = np.isfinite(damaged)
    assert predict_score(damaged) == predict_score(scores[kept], epochs=x[kept])
    assert predict_score(damaged) is not None


# --- predict_score: curves it must not forecast ---------------------------------------------------------------------

def test_fewer_points_than_the_warmup_give_no_prediction() -> None:
    scores = noisy(saturating(np.arange(40.0), 0.85, 0.15, 4.0), 0.005, 7)
    assert predict_score(scores[:19]) is None
    assert predict_score(scores[:19], warmup=10) is not None
    assert predict_score(scores[:MIN_POINTS - 1], warmup=0) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flat_noise_and_falling_curves_give_no_prediction(seed: int) -> None:
    # a flat trajectory has no trend to extrapolate: "no prediction" rather than the mean
    x = np.arange(60.0)
    rng = np.random.default_rng(seed)
    assert predict_score(np.full(x.size, 0.8)) is None
    assert predict_score(noisy(np.full(x.size, 0.8), 0.01, seed)) is None
    assert predict_score(np.clip(rng.uniform(0.2, 0.9, x.size), 0, 1)) is None
    assert predict_score(noisy(0.8 - 0.3 * (1 - np.exp(-x / 10.0)), 0.01, seed)) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_peaking_then_declining_curve_gives_no_prediction(seed: int) -> None:
    x = np.arange(150.0)
    assert predict_score(noisy(saturating(x, 0.85, 0.15, 8.0) - 0.002 * x, 0.01, seed)) is None


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_trend_swamped_by_noise_is_forecast_only_below_the_default_min_r2(seed: int) -> None:
    scores = noisy(saturating(np.arange(160.0), 0.7, 0.6, 15.0), 0.05, seed)
    assert predict_score(scores) is None
    prediction = predict_score(scores, min_r2=0.0)
    assert prediction is not None and prediction.r2 < 0.5
    assert abs(prediction.max_score - 0.7) <= 0.03


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_ramp_gives_no_prediction(seed: int) -> None:
    # no curvature, no asymptote: with unbounded scores only the identifiability check can say so
    for epochs in (20, 50, 100):
        assert predict_score(noisy(np.linspace(0.2, 0.6, epochs), 0.01, seed)) is None
        ramp = np.linspace(-1.5, -0.5, epochs) + 0.01 * np.random.default_rng(seed).standard_normal(epochs)
        assert predict_score(ramp, bounds=(-math.inf, math.inf)) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_still_rising_curve_forecasts_nothing_or_a_bounded_rise(seed: int) -> None:
    for epochs, tau in ((20, 20.0), (30, 20.0), (40, 30.0), (30, 10.0)):
        x = np.arange(float(epochs))
        truth = saturating(x, 0.9, 0.1, tau)
        prediction = predict_score(noisy(truth, 0.01, seed))
        if prediction is not None:
            assert truth[-1] - 0.03 <= prediction.max_score <= 1.0


def test_random_curves_never_forecast_out_of_range() -> None:
    rng = np.random.default_rng(8)
    shapes = ("exponential", "hyperbolic", "sigmoid", "linear", "falling", "noise", "step", "power")
    returned = 0
    for trial in range(240):
        shape = shapes[trial % len(shapes)]
        epochs, sigma = int(rng.integers(20, 120)), float(rng.choice([0.0, 0.003, 0.02, 0.05]))
        x = np.arange(float(epochs))
        cap, start, tau = rng.uniform(0.4, 1.0), rng.uniform(0.0, 0.4), rng.uniform(2.0, 80.0)
        curve = {
            "exponential": saturating(x, cap, start, tau),
            "hyperbolic": cap - (cap - start) / (1 + x / tau),
            "sigmoid": start + (cap - start) / (1 + np.exp(-(x - tau) / 5.0)),
            "linear": start + (cap - start) * x / x[-1],
            "falling": cap - (cap - start) * (1 - np.exp(-x / tau)),
            "noise": np.full(x.size, (cap + start) / 2),
            "step": np.where(x < tau / 4, start, cap),
            "power": cap - (cap - start) * (1 + x) ** -0.5,
        }[shape]
        if trial % 2:  # the same shapes as negated losses
            bounds, scores = NEGATED_LOSS, noisy(curve - 1.0, sigma, trial, NEGATED_LOSS)
        else:
            bounds, scores = DICE, noisy(curve, sigma, trial)
        prediction = predict_score(scores, bounds=bounds)
        if prediction is None:
            continue
        returned += 1
        low, high = prediction.max_score_interval
        assert bounds[0] <= low <= prediction.max_score <= high <= bounds[1], (trial, shape)
        assert math.isfinite(prediction.epoch) and prediction.epoch >= 0.0, (trial, shape)
        assert prediction.max_score >= prediction.score_at(x[-1]), (trial, shape)
        assert prediction.eta_seconds(x[-1], 30.0) >= 0.0
    assert 40 <= returned <= 200  # both outcomes were exercised


# --- input handling and the ETC -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scores": [0.1, 1.2, 0.5]}, r"score 1\.2 at epoch 1 lies outside bounds \(0, 1\).*negated loss"),
    ({"scores": [0.1, 0.2], "bounds": (1.0, 0.0)}, r"lower < upper"),
    ({"scores": [0.1, 0.2], "epochs": [0.0]}, r"same length"),
    ({"scores": [0.1, 0.2], "epochs": [1.0, 1.0]}, r"strictly increasing"),
    ({"scores": [0.1, 0.2], "reach": 1.0}, r"reach must lie in \(0, 1\)"),
])
def test_predict_score_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        predict_score(**kwargs)


def test_eta_seconds() -> None:
    prediction = ScorePrediction(max_score=0.9, max_score_interval=(0.88, 0.92), epoch=50.0, r2=0.99,
                                 residual_std=0.01, order=2, rate=0.1, gap=0.5, origin=0.0)
    assert prediction.eta_seconds(30, 10.0) == pytest.approx(200.0)
    assert prediction.eta_seconds(70, 10.0) == 0.0
    with pytest.raises(ValueError, match="seconds_per_epoch"):
        prediction.eta_seconds(30, -1.0)
    # the curve this prediction describes: 0.9 − 0.5 / (1 + 0.05·e)²
    np.testing.assert_allclose(prediction.score_at([0.0, 20.0]), [0.4, 0.9 - 0.5 / 4.0])


def test_quotient_bounds_of_a_known_rational() -> None:
    # x / (x + 1) lies in (0.5, 0.9) exactly for x in (1, 9): the first and last grid points inside are 1.01, 8.99
    a, b = np.array([1.0, 0.0]), np.array([1.0, 1.0])
    assert quotient_bounds(a, b, 0.5, 0.9) == pytest.approx((1.01, 8.99))
    assert quotient_bounds(a, b, 0.5, 0.9, x_step=0.5) == pytest.approx((1.5, 8.5))
    assert quotient_bounds(a, b, 0.5, 0.9, x_start=3, x_stop=5) == pytest.approx((3.0, 4.99))
    assert quotient_bounds(a, b, 0.99, 1.5, x_stop=50) is None  # reaches 0.99 only at x = 99


def test_quotient_bounds_of_a_fitted_curve_and_around_a_pole() -> None:
    x = np.arange(1.0, 40.0)
    a, b = quotient_regression(x, 0.8 * x / (x + 4.0), 1, 1)
    first, last = quotient_bounds(a, b, 0.73, 0.8, x_stop=100)
    assert first == pytest.approx(41.72) and last == pytest.approx(99.99)  # 0.8x/(x+4) > 0.73 iff x > 41.714...
    # 1 / (x - 2) has a pole at 2, which never counts as inside; (0.5, 1e9) holds on (2, 4)
    assert quotient_bounds([1.0], [1.0, -2.0], 0.5, 1e9, x_stop=10) == pytest.approx((2.01, 3.99))


def test_quotient_bounds_rejects_a_bad_grid_or_band() -> None:
    with pytest.raises(ValueError, match="x_step > 0"):
        quotient_bounds([1.0], [1.0], 0, 1, x_step=0)
    with pytest.raises(ValueError, match="x_start < x_stop"):
        quotient_bounds([1.0], [1.0], 0, 1, x_start=5, x_stop=5)
    with pytest.raises(ValueError, match="lower < upper"):
        quotient_bounds([1.0], [1.0], 1, 1)
