"""fit_joint_power_law (Chinchilla Approach 3) and the compute-optimal allocation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from analysis.laws.powerlaw import FitError, JointPowerLaw, fit_joint_power_law

# Hoffmann et al. 2022's published surface (unrounded exponents; Besiroglu et al. 2024).
TRUE = {"E": 1.69, "A": 406.4, "alpha": 0.33917, "B": 410.7, "beta": 0.28491}
N_AXIS = np.geomspace(1e7, 1e9, 4)
D_AXIS = np.geomspace(1e8, 1e10, 4)
N, D = (a.ravel() for a in np.meshgrid(N_AXIS, D_AXIS))


def surface(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return TRUE["E"] + TRUE["A"] * n ** -TRUE["alpha"] + TRUE["B"] * d ** -TRUE["beta"]


def test_recovers_noise_free_surface() -> None:
    fit = fit_joint_power_law(N, D, surface(N, D))
    assert fit.status == "ok" and fit.converged
    for name, value in TRUE.items():
        assert getattr(fit, name) == pytest.approx(value, rel=2e-3), name
    np.testing.assert_allclose(fit.predict(N, D), surface(N, D), rtol=1e-6)
    np.testing.assert_allclose(fit(N, D), fit.predict(N, D))


def test_noisy_surface_is_close() -> None:
    y = surface(N, D) * np.exp(np.random.default_rng(0).normal(0, 0.005, len(N)))
    fit = fit_joint_power_law(N, D, y)
    assert fit.alpha == pytest.approx(TRUE["alpha"], abs=0.05)
    assert fit.beta == pytest.approx(TRUE["beta"], abs=0.05)
    assert 0.95 < fit.r2 <= 1.0


def test_rescaling_N_changes_only_A() -> None:
    y = surface(N, D) * np.exp(np.random.default_rng(1).normal(0, 0.005, len(N)))
    base = fit_joint_power_law(N, D, y)
    scaled = fit_joint_power_law(N * 1e-6, D, y)
    assert scaled.alpha == pytest.approx(base.alpha, rel=1e-6)
    assert scaled.beta == pytest.approx(base.beta, rel=1e-6)
    assert pytest.approx(base.B, rel=1e-5) == scaled.B
    assert pytest.approx(base.A * 1e-6**base.alpha, rel=1e-5) == scaled.A


def test_allocation_matches_brute_force_minimisation() -> None:
    law = JointPowerLaw(**TRUE)
    k = 4 * 720.0  # ECT: 4 forward passes per image, ~720 FLOPs per parameter each
    for c in (1e18, 1e21):
        n_opt, d_opt = law.optimal_allocation(c, k)
        assert n_opt[0] * d_opt[0] * k == pytest.approx(c, rel=1e-9)
        def loss_at(log_n: float, c: float = c) -> float:
            return float(law.predict(np.exp(log_n), c / k / np.exp(log_n)))

        res = minimize_scalar(loss_at, bounds=(0, 60), method="bounded",
                              options={"xatol": 1e-10})
        assert n_opt[0] == pytest.approx(np.exp(res.x), rel=1e-4)
    a, b = law.allocation_exponents
    assert a + b == pytest.approx(1.0)
    assert a == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]))
    ratio = law.optimal_allocation(1e22, k)[0] / law.optimal_allocation(1e21, k)[0]
    assert ratio[0] == pytest.approx(10**a, rel=1e-9)
    with pytest.raises(ValueError, match="flops_per_param_image"):
        law.optimal_allocation(1e20, 0.0)


def test_bootstrap_gives_intervals_on_parameters_and_allocation() -> None:
    y = surface(N, D) * np.exp(np.random.default_rng(2).normal(0, 0.01, len(N)))
    fit = fit_joint_power_law(N, D, y, bootstrap=25, seed=1)
    assert fit.has_draws and fit.draws.shape[1] == 5
    assert set(fit.ci) == {"E", "A", "alpha", "B", "beta"}
    lo, hi = fit.ci["beta"]
    assert lo < fit.beta < hi
    iv = fit.allocation_interval([1e20, 1e22], 6.0)
    n_hat = fit.optimal_allocation([1e20, 1e22], 6.0)[0]
    assert np.all(iv["N"][0] <= n_hat) and np.all(n_hat <= iv["N"][1])
    lo_y, hi_y = fit.predict_interval(N[:3], D[:3])
    assert np.all(lo_y <= fit.predict(N[:3], D[:3])) and np.all(fit.predict(N[:3], D[:3]) <= hi_y)
    back = JointPowerLaw.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert back == fit and back.ci == fit.ci


@pytest.mark.parametrize(("n", "d", "match"), [
    (N, N * 10.0, "collinear"),
    (np.full(16, 1e8), D, "N = 100000000.0 for every point"),
    (N, np.full(16, 1e9), "D = 1000000000.0 for every point"),
    (N[:4], D[:4], "fewer points than the 5 parameters"),
    (N, D[:15], "lengths"),
])
def test_degenerate_joint_inputs(n: np.ndarray, d: np.ndarray, match: str) -> None:
    y = np.ones(len(n))
    with pytest.raises(FitError, match=match):
        fit_joint_power_law(n, d, y[: len(n)] if len(n) == len(d) else np.ones(len(n)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_surface_flat_in_D_is_degenerate_not_bootstrapped(seed: int) -> None:
    """Quality that does not depend on D cannot identify β: whether the fit puts β at a bound,
    near 0 (a straight line in log D) or gives its term a fall within the scatter, it is reported
    as degenerate, names D, and skips the bootstrap (whose draws would run to the iteration limit)."""
    n, d = np.repeat([1e4, 1e5, 1e6], 4), np.tile([320.0, 640.0, 960.0, 1280.0], 3)
    y = (50 + 3000 * n**-0.3) * np.exp(np.random.default_rng(seed).normal(0, 0.01, n.size))
    fit = fit_joint_power_law(n, d, y, bootstrap=1000)
    assert "degenerate" in fit.status.split(",")
    assert fit.draws is None
    reason = next(m for m in fit.messages if m.startswith("degenerate curve:"))
    assert "of D" in reason or "along D" in reason, reason


def test_a_surface_that_depends_on_both_is_not_degenerate() -> None:
    rng = np.random.default_rng(0)
    fit = fit_joint_power_law(N, D, surface(N, D) * np.exp(rng.normal(0, 0.01, N.size)),
                              bootstrap=30)
    assert "degenerate" not in fit.status and fit.draws is not None
