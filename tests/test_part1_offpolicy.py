"""Part I additions for chapter 05: truncated importance weights (TIS) with their exact bias and
variance, and the second moment of the sequence weight on the enumerable tiny LM."""

import math

import pytest
import torch

import pgbook as pg
from pgbook.exact import offpolicy as O
from pgbook.exact.seqlm import sequence_logprobs
from pgbook.trajectory import importance as IMP
from pgbook.worlds import bandits
from pgbook.worlds.bandits import TabularSoftmax
from pgbook.worlds.seqlm import MLPPolicy, SeqSpace, Tempered

F64 = torch.float64


def _world(t=1.5):
    b = bandits.context_bandit()
    pol = TabularSoftmax(3, 4)
    th_mu = -b.means.reshape(-1)
    return b, pol.probs(th_mu + 3.0 * t * b.means.reshape(-1)), pol.probs(th_mu)


# -- truncate_weights / is_estimate(truncate=) ------------------------------------------------------
def test_truncate_weights_is_min():
    w = torch.tensor([[0.1, 1.0, 2.5, 7.0]], dtype=F64)
    torch.testing.assert_close(IMP.truncate_weights(w, 2.0), torch.tensor([[0.1, 1.0, 2.0, 2.0]], dtype=F64))
    # c above every weight leaves them unchanged, bit for bit
    assert torch.equal(IMP.truncate_weights(w, 100.0), w)


def test_truncated_is_estimate_matches_hand_formula():
    gen = pg.make_generator(0)
    w = torch.rand(5, 8, generator=gen, dtype=F64) * 4
    f = torch.randn(5, 8, generator=gen, dtype=F64)
    got = IMP.is_estimate(f, w, truncate=1.5)
    torch.testing.assert_close(got, (torch.clamp(w, max=1.5) * f).mean(-1), rtol=0, atol=1e-15)
    sn = IMP.is_estimate(f, w, self_normalised=True, truncate=1.5)
    wc = torch.clamp(w, max=1.5)
    torch.testing.assert_close(sn, (wc * f).sum(-1) / wc.sum(-1), rtol=0, atol=1e-15)
    # vector values (..., N, P)
    fv = torch.randn(5, 8, 3, generator=gen, dtype=F64)
    torch.testing.assert_close(IMP.is_estimate(fv, w, truncate=1.5),
                               (wc[..., None] * fv).mean(-2), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16])
def test_truncation_dtypes_and_meta(dtype):
    w = torch.tensor([0.5, 3.0, 1.0], dtype=dtype)
    out = IMP.truncate_weights(w, 2.0)
    assert out.dtype == dtype and out.tolist() == [0.5, 2.0, 1.0]
    assert IMP.is_estimate(torch.ones(3, dtype=dtype), w, truncate=2.0).dtype == dtype
    m = IMP.truncate_weights(torch.ones(4, 3, device="meta"), 2.0)
    assert m.device.type == "meta" and m.shape == (4, 3)
    assert IMP.is_estimate(torch.ones(4, 3, device="meta"), torch.ones(4, 3, device="meta"),
                           truncate=2.0).shape == (4,)


def test_truncation_bad_inputs():
    w = torch.ones(4, dtype=F64)
    for c in (0.0, -1.0, float("nan"), float("inf"), "two"):
        with pytest.raises(ValueError, match="c"):
            IMP.truncate_weights(w, c)
    with pytest.raises(ValueError, match="weights"):
        IMP.truncate_weights(torch.tensor([1.0, -0.5], dtype=F64), 2.0)
    with pytest.raises(ValueError, match="weights"):
        IMP.truncate_weights(torch.tensor([1.0, float("nan")], dtype=F64), 2.0)
    with pytest.raises(ValueError, match="c"):
        IMP.is_estimate(w, w, truncate=0.0)


# -- exact_tis_J_moments --------------------------------------------------------------------------
def test_tis_moments_by_hand_and_limits():
    b, pi, mu = _world()
    c = 2.0
    w = pi / mu
    wc = torch.clamp(w, max=c)
    J = b.J(pi)
    first = (b.rho[:, None] * mu * wc * b.means).sum()
    second = (b.rho[:, None] * mu * wc ** 2 * b.means ** 2).sum()
    bias, var = O.exact_tis_J_moments(b, pi, mu, c, n_samples=4)
    assert abs(float(bias - (first - J))) < 1e-15
    assert abs(float(var - (second - first ** 2) / 4)) < 1e-15
    # the bias is −E_μ[(w − c)₊ r] ≤ 0 for rewards ≥ 0
    assert abs(float(bias + (b.rho[:, None] * mu * (w - c).clamp_min(0) * b.means).sum())) < 1e-15
    # c ≥ max w is ordinary IS: no bias, its exact variance
    big_bias, big_var = O.exact_tis_J_moments(b, pi, mu, float(w.max()) + 1, n_samples=4)
    assert float(big_bias) == 0.0
    assert abs(float(big_var - O.exact_is_J_variance(b, pi, mu, 4))) < 1e-15


def test_tis_moments_grid_of_levels_and_noise():
    b = bandits.noisy_bandit(0.5)
    _, pi, mu = _world()
    cs = torch.tensor([0.5, 1.0, 2.0, 8.0], dtype=F64)
    bias, var = O.exact_tis_J_moments(b, pi.expand(4, 3, 4), mu.expand(4, 3, 4), cs)
    assert bias.shape == var.shape == (4,)
    for k, c in enumerate(cs.tolist()):
        b1, v1 = O.exact_tis_J_moments(b, pi, mu, c)
        assert abs(float(bias[k] - b1)) < 1e-15 and abs(float(var[k] - v1)) < 1e-15
    # a larger level: less bias in absolute value, more variance (monotone here)
    assert (bias.abs().diff() <= 1e-15).all() and (var.diff() > 0).all()


def test_tis_moments_match_monte_carlo():
    b, pi, mu = _world()
    N, M, c = 16, 40_000, 1.5
    batch = b.sample(mu, (M, N), pg.make_generator(3))
    est = O.off_policy_J(b, pi, mu, batch, truncate=c)
    bias, var = O.exact_tis_J_moments(b, pi, mu, c, N)
    J = float(b.J(pi))
    se = float(est.std()) / math.sqrt(M)
    assert abs(float(est.mean()) - (J + float(bias))) < 4.5 * se
    assert abs(float(est.mean()) - J) > 10 * se            # and the bias is real
    se_var = float(((est - est.mean()) ** 2).std()) / math.sqrt(M)
    assert abs(float(est.var()) - float(var)) < 4.5 * se_var


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tis_moments_dtypes(dtype):
    b, pi, mu = _world()
    ref = O.exact_tis_J_moments(b, pi, mu, 2.0)
    got = O.exact_tis_J_moments(b.to(dtype=dtype), pi.to(dtype), mu.to(dtype), 2.0)
    assert got[0].dtype == dtype and got[1].dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    assert abs(float(got[1]) - float(ref[1])) < tol * max(1.0, float(ref[1]))


def test_tis_moments_bad_inputs():
    b, pi, mu = _world()
    for c in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="c"):
            O.exact_tis_J_moments(b, pi, mu, c)
    with pytest.raises(ValueError, match="n_samples"):
        O.exact_tis_J_moments(b, pi, mu, 2.0, n_samples=0)
    zero = mu.clone()
    zero[0] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64)
    with pytest.raises(ValueError, match="behaviour_probs"):
        O.exact_tis_J_moments(b, pi, zero, 2.0)


# -- exact_prefix_weight_second_moment ------------------------------------------------------------
def _seq_world(T=4):
    space = SeqSpace(tokens=("a", "b"), max_len=T, rho=torch.tensor([0.6, 0.4], dtype=F64))
    pol = MLPPolicy(space, hidden=4)
    th = pol.init(pg.make_generator(0), scale=0.8)
    th_mu = th + 0.4 * torch.randn(th.shape, generator=pg.make_generator(1), dtype=F64)
    return space, pol, th, th_mu


def test_prefix_weight_moment_by_brute_force():
    space, pol, th, th_mu = _seq_world()
    seqs = space.enumerate()
    got = O.exact_prefix_weight_second_moment(pol, th, th_mu)
    lp = pol.token_logprobs(th, seqs.x, seqs.tokens) * seqs.mask
    lq = pol.token_logprobs(th_mu, seqs.x, seqs.tokens) * seqs.mask
    q = space.rho[seqs.x] * sequence_logprobs(pol, th_mu, seqs).exp()
    for L in range(1, space.T + 1):
        w = (lp[:, :L].sum(-1) - lq[:, :L].sum(-1)).exp()
        assert abs(float((q * w * w).sum() - got[L - 1])) < 1e-12
        assert abs(float((q * w).sum()) - 1.0) < 1e-12      # the weight's mean is exactly 1
    # the full-length weight is the sequence ratio p_θ(y|x) / p_μ(y|x)
    seq_w = (sequence_logprobs(pol, th, seqs) - sequence_logprobs(pol, th_mu, seqs)).exp()
    assert abs(float((q * seq_w ** 2).sum() - got[-1])) < 1e-12
    # a martingale's second moment does not decrease
    assert (got.diff() >= -1e-12).all() and float(got[0]) > 1


def test_prefix_weight_moment_per_token_and_same_policy():
    space, pol, th, th_mu = _seq_world()
    same = O.exact_prefix_weight_second_moment(pol, th, th)
    torch.testing.assert_close(same, torch.ones(space.T, dtype=F64), rtol=0, atol=1e-12)
    tok = O.exact_prefix_weight_second_moment(pol, th, th_mu, per_token=True)
    seqs = space.enumerate()
    lp = pol.token_logprobs(th, seqs.x, seqs.tokens)
    lq = pol.token_logprobs(th_mu, seqs.x, seqs.tokens)
    q = space.rho[seqs.x] * sequence_logprobs(pol, th_mu, seqs).exp()
    m = seqs.mask
    want = (q[:, None] * m * (2 * (lp - lq)).exp()).sum(0) / (q[:, None] * m).sum(0)
    torch.testing.assert_close(tok, want, rtol=0, atol=1e-12)
    # a different behaviour *policy* object (temperature) on the same space
    t = O.exact_prefix_weight_second_moment(pol, th, th, behaviour_policy=Tempered(pol, 1.5))
    assert t.shape == (space.T,) and float(t[-1]) > 1


def test_prefix_weight_moment_float32_and_bad_inputs():
    _space, pol, th, th_mu = _seq_world()
    ref = O.exact_prefix_weight_second_moment(pol, th, th_mu)
    got = O.exact_prefix_weight_second_moment(pol, th.float(), th_mu.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="theta"):
        O.exact_prefix_weight_second_moment(pol, th[None], th_mu)
    with pytest.raises(ValueError, match="behaviour_theta"):
        O.exact_prefix_weight_second_moment(pol, th, th_mu.long())
    other = MLPPolicy(SeqSpace(tokens=("a", "b", "c"), max_len=3), hidden=4)
    with pytest.raises(ValueError, match="behaviour_policy"):
        O.exact_prefix_weight_second_moment(pol, th, other.init(), behaviour_policy=other)


def test_tis_and_prefix_moments_on_meta():
    meta = bandits.Bandit(torch.full((3,), 1 / 3, device="meta"), torch.zeros(3, 4, device="meta"))
    p = torch.full((3, 4), 0.25, device="meta")
    bias, var = O.exact_tis_J_moments(meta, p, p, 2.0, 4)
    assert bias.shape == var.shape == () and var.device.type == "meta"
    space = SeqSpace(tokens=("a", "b"), max_len=3, rho=torch.tensor([0.5, 0.5], device="meta"))
    pol = MLPPolicy(space, hidden=2)
    th = torch.zeros(pol.n_params, device="meta")
    out = O.exact_prefix_weight_second_moment(pol, th, th)
    assert out.shape == (3,) and out.device.type == "meta"
