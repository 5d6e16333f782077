"""Unit tests for pgbook.offpolicy: importance weights, IS / SNIS estimates, ESS, exact helpers."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook import registry
from pgbook.exact import bandits as XB
from pgbook.exact import offpolicy as O
from pgbook.exact.stats import EstimatorStats, estimates_from_loss
from pgbook.reward import baselines as E
from pgbook.trajectory import importance as IMP
from pgbook.worlds import bandits
from pgbook.worlds.bandits import BanditBatch, TabularSoftmax


def _world(t=1.0):
    """context_bandit, μ = softmax(−r), π = softmax((3t − 1) r) (the chapter's family)."""
    b = bandits.context_bandit()
    pol = TabularSoftmax(3, 4)
    th_mu = -b.means.reshape(-1)
    th = th_mu + 3.0 * t * b.means.reshape(-1)
    return b, pol, th, pol.probs(th), pol.probs(th_mu)


# -- importance weights --------------------------------------------------------------------------
def test_importance_weights_log_space():
    lp = torch.tensor([-0.1, -2.0, -800.0], dtype=torch.float64)
    lq = torch.tensor([-0.5, -1.0, -800.0], dtype=torch.float64)
    w = IMP.importance_weights(lp, lq)
    torch.testing.assert_close(w, torch.tensor([math.exp(0.4), math.exp(-1.0), 1.0], dtype=torch.float64),
                               rtol=1e-15, atol=0)
    # the naive ratio of probabilities underflows to 0/0 for the last entry
    assert torch.isnan(lp.exp()[2] / lq.exp()[2])


def test_importance_weights_dtypes_and_meta():
    lp = torch.log(torch.tensor([0.2, 0.5, 0.3]))
    lq = torch.log(torch.tensor([0.4, 0.4, 0.2]))
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        w = IMP.importance_weights(lp.to(dtype), lq.to(dtype))
        assert w.dtype == dtype
        torch.testing.assert_close(w.float(), torch.tensor([0.5, 1.25, 1.5]),
                                   rtol=2e-2 if dtype == torch.bfloat16 else 1e-6, atol=0)
    m = IMP.importance_weights(torch.zeros(4, 3, device="meta"), torch.zeros(4, 3, device="meta"))
    assert m.device.type == "meta" and m.shape == (4, 3)


def test_importance_weights_bad_input():
    ok = torch.tensor([-0.5, -0.5])
    with pytest.raises(ValueError, match=r"behaviour_logp.*finite"):
        IMP.importance_weights(ok, torch.tensor([-0.5, -math.inf]))
    with pytest.raises(ValueError, match=r"logp.*finite"):
        IMP.importance_weights(torch.tensor([-0.5, math.nan]), ok)
    with pytest.raises(ValueError, match="≤ 0"):
        IMP.importance_weights(torch.tensor([-0.5, 0.3]), ok)
    with pytest.raises(ValueError, match="same shape"):
        IMP.importance_weights(ok, torch.tensor([-0.5]))
    with pytest.raises(ValueError, match="floating"):
        IMP.importance_weights(torch.tensor([0, 0]), ok)


# -- estimates and ESS --------------------------------------------------------------------------------
def test_is_estimate_scalar_and_vector():
    w = torch.tensor([[1.0, 3.0], [0.5, 0.5]], dtype=torch.float64)
    f = torch.tensor([[2.0, 4.0], [1.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(IMP.is_estimate(f, w), torch.tensor([7.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(IMP.is_estimate(f, w, True), torch.tensor([3.5, 2.0], dtype=torch.float64))
    fv = torch.stack([f, -f], -1)  # (2, 2, P=2)
    torch.testing.assert_close(IMP.is_estimate(fv, w, True),
                               torch.tensor([[3.5, -3.5], [2.0, -2.0]], dtype=torch.float64))
    for dtype in (torch.float32, torch.bfloat16):
        assert IMP.is_estimate(f.to(dtype), w.to(dtype)).dtype == dtype
    m = IMP.is_estimate(torch.zeros(5, 7, 3, device="meta"), torch.ones(5, 7, device="meta"), True)
    assert m.device.type == "meta" and m.shape == (5, 3)


def test_is_estimate_bad_input():
    w = torch.ones(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="values"):
        IMP.is_estimate(torch.ones(3, dtype=torch.float64), w)
    with pytest.raises(ValueError, match="non-negative"):
        IMP.is_estimate(w, torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="sum to 0"):
        IMP.is_estimate(w, torch.zeros(4, dtype=torch.float64), True)
    with pytest.raises(ValueError, match="finite"):
        IMP.is_estimate(torch.tensor([1.0, math.inf, 0, 0], dtype=torch.float64), w)


def test_effective_sample_size_extremes_and_dtypes():
    assert float(IMP.effective_sample_size(torch.full((10,), 0.3, dtype=torch.float64))) == pytest.approx(10.0, abs=1e-12)
    one = torch.zeros(10, dtype=torch.float64)
    one[3] = 5.0
    assert float(IMP.effective_sample_size(one)) == pytest.approx(1.0, abs=1e-15)
    for dtype in (torch.float32, torch.bfloat16):
        assert IMP.effective_sample_size(torch.ones(3, 8, dtype=dtype)).dtype == dtype
    assert IMP.effective_sample_size(torch.ones(3, 8, device="meta")).shape == (3,)
    with pytest.raises(ValueError, match="scalar"):
        IMP.effective_sample_size(torch.tensor(1.0))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 50), seed=st.integers(0, 10_000))
def test_property_ess_between_one_and_n(n, seed):
    w = torch.rand(n, dtype=torch.float64, generator=pg.make_generator(seed)) * 10 + 1e-3
    ess = float(IMP.effective_sample_size(w))
    assert 1 - 1e-12 <= ess <= n + 1e-12
    # SNIS of a constant is that constant, whatever the weights
    assert float(IMP.is_estimate(torch.full((n,), 2.5, dtype=torch.float64), w, True)) == pytest.approx(2.5, abs=1e-12)


# -- on a bandit ----------------------------------------------------------------------------------------
def test_off_policy_J_unbiased_and_snis_n1_is_J_mu():
    b, _pol, _th, p, mu = _world()
    batch = b.sample(mu, (20000, 8), pg.make_generator(0))
    est = O.off_policy_J(b, p, mu, batch)
    z = (est.mean() - b.J(p)) / (est.std() / math.sqrt(est.numel()))
    assert abs(float(z)) < 4.5
    var = float(O.exact_is_J_variance(b, p, mu, 8))
    assert float(est.var()) == pytest.approx(var, rel=0.06)
    sn1 = O.off_policy_J(b, p, mu, BanditBatch(batch.s[:, :1], batch.a[:, :1], batch.r[:, :1]), True)
    torch.testing.assert_close(sn1, batch.r[:, 0], rtol=0, atol=1e-15)  # the weight cancels at N = 1
    # at π = μ the estimate is the batch mean reward
    torch.testing.assert_close(O.off_policy_J(b, mu, mu, batch), batch.r.mean(-1), rtol=0, atol=1e-15)


def test_snis_bias_matches_prediction_at_large_n():
    b, _pol, _th, p, mu = _world()
    n = 64
    batch = b.sample(mu, (16384, n), pg.make_generator(1))
    sn = O.off_policy_J(b, p, mu, batch, True)
    bias = float(sn.mean() - b.J(p))
    se = float(sn.std()) / math.sqrt(sn.numel())
    c = float(O.snis_bias_coefficient(b, p, mu))
    assert c < 0 and abs(bias - c / n) < 4.5 * se and abs(bias) > 5 * se
    # and N·Var approaches the delta-method variance E_μ[w²(r − J)²] as N grows
    big = b.sample(mu, (4096, 256), pg.make_generator(2))
    var_256 = float(O.off_policy_J(b, p, mu, big, True).var())
    assert var_256 == pytest.approx(float(O.exact_is_J_variance(b, p, mu, 256, True)), rel=0.07)


def test_off_policy_gradient_unbiased_and_equal_to_on_policy_at_mu():
    b, pol, th, _p, mu = _world()
    batch = b.sample(mu, (8000, 8), pg.make_generator(2))
    est = O.off_policy_gradient(b, pol, th, mu, batch, "value")
    assert est.shape == (8000, 12)
    assert EstimatorStats(est).is_unbiased(XB.exact_gradient(b, pol, th), z=4.5)
    single = O.off_policy_gradient(b, pol, th, mu, BanditBatch(batch.s[0], batch.a[0], batch.r[0]), "value")
    torch.testing.assert_close(single, est[0], rtol=0, atol=1e-15)
    sn = O.off_policy_gradient(b, pol, th, mu, batch, "value", self_normalised=True)
    assert EstimatorStats(sn).max_abs_z(XB.exact_gradient(b, pol, th)) > 10  # SNIS is biased at N = 8
    # π = μ: identical to the on-policy REINFORCE estimate on the same batches
    th_mu = -b.means.reshape(-1)
    off = O.off_policy_gradient(b, pol, th_mu, mu, batch, "value")
    adv = E.sample_weights(b, pol, th_mu, batch, "value")
    on = estimates_from_loss(lambda t, x: XB.reinforce_surrogate(pol, t, BanditBatch(*x), x[2]),
                             th_mu, (batch.s, batch.a, adv))
    torch.testing.assert_close(off, on, rtol=0, atol=1e-15)


def test_off_policy_gradient_float32():
    b, pol, th, _p, mu = _world()
    batch = b.sample(mu, (4, 8), pg.make_generator(3))
    g = O.off_policy_gradient(b, pol, th.float(), mu, batch, "none")
    assert g.dtype == torch.float32 and g.shape == (4, 12)
    ref = O.off_policy_gradient(b, pol, th, mu, batch, "none")
    torch.testing.assert_close(g.double(), ref, rtol=1e-4, atol=1e-5)
    gb = O.off_policy_gradient(b, pol, th.bfloat16(), mu.bfloat16(), batch, "none")
    assert gb.dtype == torch.bfloat16 and bool(torch.isfinite(gb).all())
    torch.testing.assert_close(gb.double(), ref, rtol=0.1, atol=0.05)


def test_off_policy_bad_input():
    b, pol, th, p, mu = _world()
    batch = b.sample(mu, 8, pg.make_generator(4))
    zero_mu = mu.clone()
    zero_mu[0] = torch.tensor([0.0, 0.5, 0.5, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="> 0"):
        O.off_policy_J(b, p, zero_mu, batch)
    with pytest.raises(ValueError, match="> 0"):
        O.off_policy_gradient(b, pol, th, zero_mu, batch)
    with pytest.raises(ValueError, match="summing to 1"):
        O.off_policy_J(b, p, mu * 2, batch)
    with pytest.raises(ValueError, match="same shape"):
        O.off_policy_J(b, p, mu[:2], batch)
    with pytest.raises(ValueError, match=r"\(N,\) or \(M, N\)"):
        big = b.sample(mu, (2, 2, 3), pg.make_generator(5))
        O.off_policy_gradient(b, pol, th, mu, big)


# -- exact helpers ---------------------------------------------------------------------------------------
def test_exact_kl_and_second_moment():
    b, _pol, _th, p, mu = _world()
    kl = XB.exact_kl(b, p.log(), mu.log())
    by_hand = sum(float(b.rho[s]) * sum(float(p[s, a] * math.log(p[s, a] / mu[s, a])) for a in range(4))
                  for s in range(3))
    assert float(kl) == pytest.approx(by_hand, abs=1e-14)
    assert float(XB.exact_kl(b, mu.log(), mu.log())) == 0.0
    assert float(O.exact_weight_second_moment(mu, mu, b.rho)) == pytest.approx(1.0, abs=1e-15)
    chi2 = sum(float(b.rho[s]) * sum(float((p[s, a] - mu[s, a]) ** 2 / mu[s, a]) for a in range(4))
               for s in range(3))
    assert float(O.exact_weight_second_moment(p, mu, b.rho)) == pytest.approx(1 + chi2, abs=1e-13)
    # batched, float32 / bfloat16, meta; a reference action of probability 0 contributes 0
    both = torch.stack([p, mu])
    assert XB.exact_kl(b, both.log(), mu.log().expand(2, 3, 4)).shape == (2,)
    for dtype in (torch.float32, torch.bfloat16):
        bd = bandits.Bandit(b.rho.to(dtype), b.means.to(dtype))
        assert XB.exact_kl(bd, p.log().to(dtype), mu.log().to(dtype)).dtype == dtype
    meta = bandits.Bandit(torch.full((3,), 1 / 3, device="meta"), torch.zeros(3, 4, device="meta"))
    assert XB.exact_kl(meta, torch.zeros(3, 4, device="meta"), torch.zeros(3, 4, device="meta")).shape == ()
    point = torch.tensor([[1.0, 0, 0, 0]] * 3, dtype=torch.float64)
    want = -sum(float(b.rho[s] * mu[s, 0].log()) for s in range(3))
    assert float(XB.exact_kl(b, point.log(), mu.log())) == pytest.approx(want, abs=1e-14)
    assert float(XB.exact_kl(b, mu.log(), point.log())) == math.inf
    with pytest.raises(ValueError, match="logp"):
        XB.exact_kl(b, p.log()[:2], mu.log())


def test_exact_variance_on_policy_case_and_noise():
    b = bandits.noisy_bandit(0.5)
    pol = TabularSoftmax(3, 4)
    p = pol.probs(torch.randn(12, dtype=torch.float64, generator=pg.make_generator(6)))
    on = O.exact_is_J_variance(b, p, p, 4)
    r2 = ((p * (b.means ** 2 + 0.25)).sum(-1) * b.rho).sum()
    assert float(on) == pytest.approx(float(r2 - b.J(p) ** 2) / 4, abs=1e-15)
    # at π = μ SNIS's leading variance equals ordinary IS's, and its bias coefficient is 0
    sn = O.exact_is_J_variance(b, p, p, 4, self_normalised=True)
    assert float(sn) == pytest.approx(float(on), abs=1e-15)
    assert abs(float(O.snis_bias_coefficient(b, p, p))) < 1e-15
    with pytest.raises(ValueError, match="n_samples"):
        O.exact_is_J_variance(b, p, p, 0)


def test_methods_registered_on_the_trajectory_side():
    m = registry.method("Off-policy PG (IS)")
    assert m.parent == "REINFORCE + baseline" and m.axis == "trajectory"
    assert m.resolved_parts()["policy_loss"] == "importance_weighted"
    assert registry.method("Off-policy PG (SNIS)").axis == "trajectory"
    assert registry.get("data", "behaviour_policy").side == "trajectory"
