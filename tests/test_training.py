"""Unit tests for pgbook.training: the REINFORCE loop, the weighted-MLE view and SFT."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook import registry
from pgbook.exact import bandits as E
from pgbook.reward import baselines as BL
from pgbook.train import reinforce as T
from pgbook.worlds import bandits
from pgbook.worlds.bandits import Bandit, BanditBatch, TabularSoftmax


def _setup(seed=0, n=40, dtype=torch.float64):
    b = bandits.context_bandit(dtype=dtype)
    pol = TabularSoftmax(3, 4)
    th = torch.randn(12, dtype=dtype, generator=pg.make_generator(seed))
    batch = b.sample(pol.probs(th), n, pg.make_generator(seed + 1))
    return b, pol, th, batch


# -- weighted log-likelihood ------------------------------------------------------------------
def test_weighted_log_likelihood_value_and_gradient_identity():
    b, pol, th, batch = _setup()
    A = BL.sample_weights(b, pol, th, batch, "value")
    L = T.weighted_log_likelihood(pol, th, batch, A)
    by_hand = (A * pol.log_probs(th)[batch.s, batch.a]).mean()
    assert abs(float(L - by_hand)) < 1e-15
    grad = torch.func.grad(T.weighted_log_likelihood, argnums=1)(pol, th, batch, A)
    closed = (A[:, None, None] * E.softmax_score(pol.probs(th), batch.s, batch.a)).mean(0).reshape(-1)
    torch.testing.assert_close(grad, closed, rtol=0, atol=1e-15)


def test_weighted_log_likelihood_dtypes_and_meta():
    for dtype in (torch.float32, torch.bfloat16):
        _b, pol, th, batch = _setup(dtype=torch.float64)
        w = torch.ones(batch.s.shape, dtype=dtype)
        L = T.weighted_log_likelihood(pol, th.to(dtype), batch, w)
        assert L.dtype == dtype and L.shape == ()
        ref = T.weighted_log_likelihood(pol, th, batch, w.double())
        assert abs(float(L) - float(ref)) < (5e-2 if dtype == torch.bfloat16 else 1e-5)
    th = torch.zeros(12, dtype=torch.float64, device="meta")
    s = torch.zeros(5, dtype=torch.long, device="meta")
    w = torch.ones(5, dtype=torch.float64, device="meta")
    L = T.weighted_log_likelihood(TabularSoftmax(3, 4), th, BanditBatch(s, s, w), w)
    assert L.device.type == "meta" and L.shape == ()


def test_weighted_log_likelihood_bad_input():
    _b, pol, th, batch = _setup()
    with pytest.raises(ValueError, match="weights"):
        T.weighted_log_likelihood(pol, th, batch, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="finite"):
        T.weighted_log_likelihood(pol, th, batch, torch.full((40,), float("nan"), dtype=torch.float64))


@settings(max_examples=20, deadline=None)
@given(S=st.integers(1, 4), A=st.integers(2, 5), n=st.integers(1, 30), seed=st.integers(0, 10_000))
def test_property_weighted_mle_gradient_is_the_pg_estimate(S, A, n, seed):
    g = pg.make_generator(seed)
    b = Bandit(torch.softmax(torch.randn(S, dtype=torch.float64, generator=g), 0),
               torch.randn(S, A, dtype=torch.float64, generator=g))
    pol = TabularSoftmax(S, A)
    th = torch.randn(S * A, dtype=torch.float64, generator=g)
    batch = b.sample(pol.probs(th), n, g)
    w = torch.randn(n, dtype=torch.float64, generator=g)
    grad = torch.func.grad(T.weighted_log_likelihood, argnums=1)(pol, th, batch, w)
    per_sample = E.score(pol, th, batch.s, batch.a)  # (n, P) by jacrev
    torch.testing.assert_close(grad, (w[:, None] * per_sample).mean(0), rtol=0, atol=1e-13)


# -- SFT ----------------------------------------------------------------------------------------
def test_sft_loss_is_negative_mean_log_likelihood_and_zero_gradient_at_mle():
    _b, pol, th, batch = _setup(n=400)
    loss = T.sft_loss(pol, th, batch.s, batch.a)
    assert abs(float(loss + pol.log_probs(th)[batch.s, batch.a].mean())) < 1e-15
    freq = T.empirical_policy(batch.s, batch.a, 3, 4)
    assert bool((freq > 0).all())
    g = torch.func.grad(T.sft_loss, argnums=1)(pol, freq.log().reshape(-1), batch.s, batch.a)
    assert float(g.abs().max()) < 1e-15


def test_empirical_policy_counts_and_unseen_context():
    s = torch.tensor([0, 0, 0, 2])
    a = torch.tensor([1, 1, 3, 0])
    f = T.empirical_policy(s, a, 3, 4)
    expect = torch.tensor([[0, 2 / 3, 0, 1 / 3], [0.25] * 4, [1.0, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(f, expect, rtol=0, atol=0)
    assert T.empirical_policy(s, a, 3, 4, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="indices"):
        T.empirical_policy(torch.tensor([3]), torch.tensor([0]), 3, 4)
    with pytest.raises(ValueError, match="same shape"):
        T.empirical_policy(torch.tensor([0, 1]), torch.tensor([0]), 3, 4)
    with pytest.raises(ValueError, match="n_actions"):
        T.empirical_policy(s, a, 3, 0)


def test_fit_weighted_mle_sft_converges_to_frequencies():
    b, pol = bandits.context_bandit(), TabularSoftmax(3, 4)
    batch = b.sample(pol.probs(pol.init()), 600, pg.make_generator(3))  # demonstrations from the uniform policy
    fit = T.fit_weighted_mle(pol, pol.init(), batch, steps=120, lr=5.0)
    freq = T.empirical_policy(batch.s, batch.a, 3, 4)
    assert float((pol.probs(fit.theta) - freq).abs().max()) < 1e-8
    assert fit.objective.shape == (121,)
    assert bool((fit.objective.diff() >= -1e-15).all())  # gradient ascent on a concave L
    f32 = T.fit_weighted_mle(pol, pol.init(dtype=torch.float32), batch, steps=5, lr=1.0)
    assert f32.theta.dtype == torch.float32
    with pytest.raises(ValueError, match="steps"):
        T.fit_weighted_mle(pol, pol.init(), batch, steps=0)
    with pytest.raises(ValueError, match="lr"):
        T.fit_weighted_mle(pol, pol.init(), batch, lr=-1.0)


# -- the training loop --------------------------------------------------------------------------
def test_reinforce_single_run_is_the_plain_loop():
    b, pol = bandits.offset_bandit(5.0), TabularSoftmax(3, 4)
    h = T.reinforce(b, pol, pol.init(), 30, 8, 0.5, "value", pg.make_generator(0), progress=False)
    theta, g = pol.init(), pg.make_generator(0)
    Js = [E.exact_J(b, pol, theta)]
    for _ in range(30):
        batch = b.sample(pol.probs(theta), 8, g)
        w = BL.sample_weights(b, pol, theta, batch, "value")
        theta = theta - 0.5 * torch.func.grad(E.reinforce_surrogate, argnums=1)(pol, theta, batch, w)
        Js.append(E.exact_J(b, pol, theta))
    torch.testing.assert_close(h.J, torch.stack(Js), rtol=0, atol=1e-12)
    torch.testing.assert_close(h.theta[-1], theta, rtol=0, atol=1e-12)
    assert h.J.shape == (31,) and h.theta.shape == (31, 12) and h.grad_norm.shape == (30,)
    assert h.batch_reward.shape == (30,) and h.steps == 30
    assert h.optimum == pytest.approx(6.0) and h.gap.shape == (31,)


def test_reinforce_vectorised_runs_shapes_and_learning():
    b, pol = bandits.context_bandit(), TabularSoftmax(3, 4)
    lrs = torch.tensor([0.5, 2.0], dtype=torch.float64)[:, None]
    start = pol.init().expand(2, 3, 12)
    h = T.reinforce(b, pol, start, 40, 16, lrs, "value", pg.make_generator(1), progress=False)
    assert h.J.shape == (41, 2, 3) and h.theta.shape == (41, 2, 3, 12) and h.final_J.shape == (2, 3)
    assert bool((h.final_J > h.J[0] + 0.1).all())                  # every run learns
    assert float(h.final_J[1].mean()) > float(h.final_J[0].mean())  # larger step, further in 40 steps
    # (P,) with a tensor of learning rates broadcasts to one run per rate
    h2 = T.reinforce(b, pol, pol.init(), 3, 4, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64),
                     "none", pg.make_generator(2), progress=False)
    assert h2.J.shape == (4, 3)
    # a (1, P) batch of one run draws the same batches as (P,)
    a = T.reinforce(b, pol, pol.init(), 5, 4, 1.0, 0.5, pg.make_generator(3), progress=False)
    c = T.reinforce(b, pol, pol.init()[None], 5, 4, 1.0, 0.5, pg.make_generator(3), progress=False)
    torch.testing.assert_close(a.J, c.J[:, 0], rtol=0, atol=1e-14)


def test_reinforce_dtypes():
    b, pol = bandits.context_bandit(), TabularSoftmax(3, 4)
    for dtype in (torch.float32, torch.bfloat16):
        h = T.reinforce(b, pol, pol.init(dtype=dtype), 10, 8, 1.0, "value", pg.make_generator(0),
                        progress=False)
        assert h.J.dtype == dtype and h.theta.dtype == dtype
        assert math.isfinite(float(h.final_J))


def test_reinforce_bad_input():
    b, pol = bandits.context_bandit(), TabularSoftmax(3, 4)
    th, g = pol.init(), pg.make_generator(0)
    with pytest.raises(ValueError, match="steps"):
        T.reinforce(b, pol, th, 0, 4, 0.1, generator=g)
    with pytest.raises(ValueError, match="batch_size"):
        T.reinforce(b, pol, th, 2, 0, 0.1, generator=g)
    with pytest.raises(ValueError, match="lr"):
        T.reinforce(b, pol, th, 2, 4, -0.1, generator=g)
    with pytest.raises(ValueError, match="finite"):
        T.reinforce(b, pol, th, 2, 4, float("nan"), generator=g)
    with pytest.raises(ValueError, match="generator"):
        T.reinforce(b, pol, th, 2, 4, 0.1, generator=0)
    with pytest.raises(ValueError, match="theta"):
        T.reinforce(b, pol, torch.zeros(5, dtype=torch.float64), 2, 4, 0.1, generator=g)
    with pytest.raises(ValueError, match="baseline"):
        T.reinforce(b, pol, th, 2, 4, 0.1, "median", generator=g)
    with pytest.raises(RuntimeError):  # shapes (2, P) and lr (3,) do not broadcast
        T.reinforce(b, pol, th.expand(2, 12), 2, 4, torch.ones(3, dtype=torch.float64), generator=g)


def test_batched_sampling_draws_row_k_from_policy_k():
    b = bandits.context_bandit()
    probs = torch.zeros(3, 3, 4, dtype=torch.float64)
    for k in range(3):
        probs[k, :, k] = 1.0  # policy k always plays action k
    batch = b.sample(probs, (5, 7), pg.make_generator(0))
    assert batch.s.shape == batch.a.shape == batch.r.shape == (3, 5, 7)
    for k in range(3):
        assert bool((batch.a[k] == k).all())
    torch.testing.assert_close(batch.r, b.means[batch.s, batch.a], rtol=0, atol=0)
    with pytest.raises(ValueError, match="sampling"):
        b.sample(probs[None], 4, pg.make_generator(0))


def test_sft_is_registered_on_both_sides():
    m = registry.method("SFT (weighted MLE, A = 1)")
    assert m.parent == "REINFORCE" and m.axis == "both"
    assert registry.get("advantage", "unit").side == "reward"
    assert registry.get("data", "dataset").side == "trajectory"
    assert registry.get("data", "on_policy").side == "trajectory"
