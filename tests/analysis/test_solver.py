"""analysis.estimator.solver's problem: the parameter layout, its bounds and the objective's gradient."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.estimator.solver import LossName, Problem


def _problem(num_terms: int, irreducible: bool, loss: LossName = "huber") -> Problem:
    rng = np.random.default_rng(0)
    log_u = np.log(rng.uniform(0.2, 5.0, size=(num_terms, 30)))
    log_y = np.log(0.3 + sum(np.exp(-0.7 * lu) for lu in log_u)) + rng.normal(0, 0.01, 30)
    return Problem(log_u=log_u, log_y=log_y, irreducible=irreducible, loss=loss,
                    delta=1e-3, alpha_bounds=(0.0, 5.0))


@pytest.mark.parametrize(("num_terms", "irreducible"), [(1, True), (1, False), (2, True)])
def test_pack_and_unpack_are_inverse_and_bounds_match_the_layout(num_terms: int,
                                                                 irreducible: bool) -> None:
    problem = _problem(num_terms, irreducible)
    a, alpha = np.arange(num_terms) - 1.0, np.arange(num_terms) + 0.5
    theta = problem.pack(0.25, a, alpha)
    assert theta.shape == (problem.num_params,) == (int(irreducible) + 2 * num_terms,)
    e, a2, alpha2 = problem.unpack(theta)
    assert e == (0.25 if irreducible else 0.0)
    np.testing.assert_array_equal(a2, a)
    np.testing.assert_array_equal(alpha2, alpha)
    bounds = problem.bounds()
    assert len(bounds) == problem.num_params
    assert bounds[-1] == (0.0, 5.0) and (bounds[0] == (0.0, None)) == irreducible


@pytest.mark.parametrize("loss", ["huber", "squared"])
def test_objective_gradient_matches_finite_differences(loss: LossName) -> None:
    problem = _problem(2, True, loss)
    theta = problem.pack(0.2, np.array([-0.3, 0.1]), np.array([0.6, 1.1]))
    value, grad = problem.objective(theta)
    assert np.isfinite(value) and grad.shape == theta.shape
    eps = 1e-6
    numeric = np.array([(problem.objective(theta + eps * np.eye(len(theta))[i])[0]
                         - problem.objective(theta - eps * np.eye(len(theta))[i])[0]) / (2 * eps)
                        for i in range(len(theta))])
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-8)
