"""Unit tests for the exact bandit world, the Part I estimators and the measuring tools."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook.exact import bandits as E
from pgbook.exact import stats as stats_
from pgbook.reward import baselines as BL
from pgbook.worlds import bandits as bandits_
from pgbook.worlds.bandits import Bandit, LinearSoftmax, TabularSoftmax


def _theta(P, seed=0, dtype=torch.float64):
    return torch.randn(P, dtype=dtype, generator=pg.make_generator(seed))


def test_exact_J_matches_hand_sum():
    b = bandits_.context_bandit()
    pol = TabularSoftmax(3, 4)
    th = _theta(12)
    p = pol.probs(th)
    by_hand = sum(float(b.rho[s]) * sum(float(p[s, a] * b.means[s, a]) for a in range(4))
                  for s in range(3))
    assert abs(float(E.exact_J(b, pol, th)) - by_hand) < 1e-12


def test_uniform_policy_value():
    b = bandits_.context_bandit()
    assert abs(float(b.J(TabularSoftmax(3, 4).probs(torch.zeros(12, dtype=torch.float64)))) - 0.435) < 1e-12
    assert float(b.optimal_J()) == pytest.approx(1.0)


def test_score_function_equals_closed_form():
    b = bandits_.context_bandit()
    pol = TabularSoftmax(3, 4)
    th = _theta(12)
    batch = b.sample(pol.probs(th), 50, pg.make_generator(1))
    auto = E.score(pol, th, batch.s, batch.a)
    closed = E.softmax_score(pol.probs(th), batch.s, batch.a).reshape(50, 12)
    torch.testing.assert_close(auto, closed, rtol=0, atol=1e-14)


def test_exact_gradient_matches_finite_differences():
    b, pol = bandits_.two_param_bandit()
    th = torch.tensor([0.3, -0.2], dtype=torch.float64)
    g = E.exact_gradient(b, pol, th)
    h = 1e-6
    fd = torch.stack([(E.exact_J(b, pol, th + h * e) - E.exact_J(b, pol, th - h * e)) / (2 * h)
                      for e in torch.eye(2, dtype=torch.float64)])
    torch.testing.assert_close(g, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("baseline", ["none", "value", "optimal", 3.0])
def test_estimator_unbiased_and_variance_matches_exact(baseline):
    b = bandits_.context_bandit()
    pol = TabularSoftmax(3, 4)
    th = _theta(12, seed=2)
    g = E.exact_gradient(b, pol, th)
    est = E.policy_gradient_estimates(b, pol, th, 8, 20000, pg.make_generator(3), baseline)
    stats = stats_.EstimatorStats(est)
    assert stats.is_unbiased(g, z=4.5)
    table = {
        "none": None,
        "value": BL.state_table(b.values(pol.probs(th)), 4),
        "optimal": BL.state_table(BL.optimal_baseline_table(b, pol, th), 4),
        3.0: torch.full((3, 4), 3.0, dtype=torch.float64),
    }[baseline]
    exact_var = float(E.exact_total_variance(b, pol, th, table, n_samples=8))
    assert float(stats.total_variance) == pytest.approx(exact_var, rel=0.05)


def test_optimal_baseline_minimises_exact_variance():
    b = bandits_.offset_bandit(5.0)
    pol = TabularSoftmax(3, 4)
    th = _theta(12, seed=4)
    bstar = BL.optimal_baseline_table(b, pol, th)
    v_star = E.exact_total_variance(b, pol, th, BL.state_table(bstar, 4))
    for k in range(3):
        for d in (-0.3, 0.3):
            moved = bstar.clone()
            moved[k] += d
            assert v_star < E.exact_total_variance(b, pol, th, BL.state_table(moved, 4))


def test_action_dependent_baseline_bias_is_predicted():
    b = bandits_.context_bandit()
    pol = TabularSoftmax(3, 4)
    th = _theta(12, seed=5)
    table = 0.5 * b.means
    bias = E.baseline_bias(b, pol, th, table)
    mean, _ = E.exact_estimator_moments(b, pol, th, table)
    torch.testing.assert_close(mean, E.exact_gradient(b, pol, th) + bias, rtol=0, atol=1e-14)
    assert float(bias.norm()) > 1e-3
    # a state-only table has zero bias
    state = BL.state_table(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), 4)
    assert float(E.baseline_bias(b, pol, th, state).abs().max()) < 1e-15


def test_variance_scales_as_one_over_n():
    b = bandits_.context_bandit()
    pol = TabularSoftmax(3, 4)
    th = _theta(12, seed=6)
    v = [float(stats_.EstimatorStats(E.policy_gradient_estimates(
        b, pol, th, n, 20000, pg.make_generator(7), "none")).total_variance) for n in (4, 16)]
    assert v[0] / v[1] == pytest.approx(4.0, rel=0.06)


def test_sampling_is_deterministic_and_shaped():
    b = bandits_.noisy_bandit(0.5)
    p = TabularSoftmax(3, 4).probs(_theta(12))
    x = b.sample(p, (5, 7), pg.make_generator(11))
    y = b.sample(p, (5, 7), pg.make_generator(11))
    assert x.s.shape == x.a.shape == x.r.shape == (5, 7)
    assert torch.equal(x.s, y.s) and torch.equal(x.a, y.a) and torch.equal(x.r, y.r)


def test_linear_policy_and_float32():
    b, pol = bandits_.two_param_bandit(dtype=torch.float32)
    th = torch.zeros(2)
    assert pol.probs(th).dtype == torch.float32
    assert E.exact_gradient(b, pol, th).dtype == torch.float32
    est = E.policy_gradient_estimates(b, pol, th, 4, 10, pg.make_generator(0))
    assert est.shape == (10, 2) and est.dtype == torch.float32


def test_meta_device_runs_without_values():
    b = bandits_.context_bandit(device="meta")
    pol = TabularSoftmax(3, 4)
    th = torch.zeros(12, dtype=torch.float64, device="meta")
    J = E.exact_J(b, pol, th)
    assert J.device.type == "meta" and J.shape == ()


# -- bad input ---------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="summing to 1"):
        Bandit(torch.tensor([0.5, 0.6], dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        Bandit(torch.tensor([1.0], dtype=torch.float64),
               torch.tensor([[0.0, float("nan")]], dtype=torch.float64))
    with pytest.raises(ValueError, match="rows"):
        Bandit(torch.tensor([1.0], dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    b = bandits_.context_bandit()
    pol = TabularSoftmax(3, 4)
    with pytest.raises(ValueError, match="theta"):
        pol.probs(torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="probs"):
        b.J(torch.full((3, 3), 1 / 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="n_samples"):
        E.policy_gradient_estimates(b, pol, torch.zeros(12, dtype=torch.float64), 0, 10,
                                     pg.make_generator(0))
    with pytest.raises(ValueError, match="integer"):
        b.sample(pol.probs(torch.zeros(12, dtype=torch.float64)), 2.5, pg.make_generator(0))
    with pytest.raises(ValueError, match="baseline"):
        BL.get_baseline("median")
    with pytest.raises(ValueError, match="finite"):
        E.reinforce_surrogate(pol, torch.zeros(12, dtype=torch.float64),
                              bandits_.BanditBatch(torch.tensor([0]), torch.tensor([1]),
                                             torch.tensor([float("inf")], dtype=torch.float64)),
                              torch.tensor([float("inf")], dtype=torch.float64))
    with pytest.raises(ValueError, match="one device"):
        b.J(torch.full((3, 4), 0.25, dtype=torch.float64, device="meta"))
    with pytest.raises(ValueError, match="at least 2"):
        stats_.EstimatorStats(torch.zeros(1, 3))


# -- property tests on random bandits -----------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(S=st.integers(1, 4), A=st.integers(2, 5), seed=st.integers(0, 10_000))
def test_property_baseline_identity_and_exact_mean(S, A, seed):
    g = pg.make_generator(seed)
    rho = torch.softmax(torch.randn(S, dtype=torch.float64, generator=g), 0)
    means = torch.randn(S, A, dtype=torch.float64, generator=g)
    b = Bandit(rho, means)
    pol = TabularSoftmax(S, A)
    th = torch.randn(S * A, dtype=torch.float64, generator=g)
    # E_a[∇log π(a|s)] = 0 for every s
    probs = pol.probs(th)
    zero = torch.einsum("sa,sap->sp", probs, pol.scores(th))
    assert float(zero.abs().max()) < 1e-12
    # the exact mean of the score-function estimator is ∇J
    mean, _ = E.exact_estimator_moments(b, pol, th)
    torch.testing.assert_close(mean, E.exact_gradient(b, pol, th), rtol=0, atol=1e-12)
    # the optimal baseline never loses to the value baseline
    v_opt = E.exact_total_variance(b, pol, th, BL.state_table(BL.optimal_baseline_table(b, pol, th), A))
    v_val = E.exact_total_variance(b, pol, th, BL.state_table(b.values(probs), A))
    assert float(v_opt) <= float(v_val) * (1 + 1e-12) + 1e-15


@settings(max_examples=15, deadline=None)
@given(P=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_property_linear_policy_gradient(P, seed):
    g = pg.make_generator(seed)
    feats = torch.randn(2, 3, P, dtype=torch.float64, generator=g)
    b = Bandit(torch.tensor([0.4, 0.6], dtype=torch.float64),
               torch.randn(2, 3, dtype=torch.float64, generator=g))
    pol = LinearSoftmax(feats)
    th = torch.randn(P, dtype=torch.float64, generator=g)
    mean, _ = E.exact_estimator_moments(b, pol, th)
    torch.testing.assert_close(mean, E.exact_gradient(b, pol, th), rtol=0, atol=1e-12)
    assert math.isfinite(float(E.exact_J(b, pol, th)))
