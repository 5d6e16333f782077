"""Unit tests for pgbook.ppo: the importance-sampled surrogate, KL penalty (fixed and
adaptive β), clipping and dual clip, and many epochs on one batch."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook import registry
from pgbook.exact import bandits as E
from pgbook.train import ppo
from pgbook.trajectory import losses
from pgbook.trajectory.losses import ppo_clip_loss
from pgbook.worlds import bandits
from pgbook.worlds.bandits import TabularSoftmax

F64 = torch.float64


def _world(dtype=F64, device="cpu"):
    b = bandits.noisy_bandit(0.5, dtype=dtype, device=device)
    pol = TabularSoftmax(3, 4)
    th = (2.0 * bandits.context_bandit(dtype=dtype, device=device).means).flatten()
    return b, pol, th


def test_collect_shapes_and_advantages():
    b, pol, th = _world()
    batch = ppo.collect(b, pol, th, 20, pg.make_generator(0))
    assert batch.s.shape == batch.a.shape == batch.adv.shape == batch.old_logp.shape == (20,)
    raw = b.sample(pol.probs(th), 20, pg.make_generator(0))
    torch.testing.assert_close(batch.adv, raw.r - b.values(pol.probs(th))[raw.s], rtol=0, atol=0)
    torch.testing.assert_close(batch.old_logp, pol.log_prob(th, raw.s, raw.a), rtol=0, atol=0)
    many = ppo.collect(b, pol, th, (5, 8), pg.make_generator(1))
    assert many.shape == (5, 8)


@pytest.mark.parametrize("eps", [None, 0.2])
def test_gradient_at_theta_old_is_the_policy_gradient_estimate(eps):
    b, pol, th = _world()
    batch = ppo.collect(b, pol, th, 64, pg.make_generator(2))
    g = torch.func.grad(lambda t: ppo.surrogate(pol, t, batch, eps))(th)
    pg_est = -torch.func.grad(
        lambda t: E.reinforce_surrogate(pol, t, bandits.BanditBatch(batch.s, batch.a, batch.adv),
                                        batch.adv))(th)
    torch.testing.assert_close(g, pg_est, rtol=0, atol=1e-15)
    assert float(ppo.surrogate(pol, th, batch, eps)) == pytest.approx(float(batch.adv.mean()),
                                                                        abs=1e-15)
    gk = torch.func.grad(lambda t: ppo.batch_kl(pol, t, batch))(th)
    assert float(gk.abs().max()) < 1e-15


def test_batched_runs_match_single_runs():
    b, pol, th = _world()
    batch = ppo.collect(b, pol, th, (3, 10), pg.make_generator(3))
    thetas = th + 0.3 * torch.randn(3, 12, dtype=F64, generator=pg.make_generator(4))
    both = ppo.ppo_objective(pol, thetas, batch, eps_low=0.2, beta=0.5)
    for m in range(3):
        one = ppo.make_batch(pol, th, batch.s[m], batch.a[m], batch.adv[m])
        assert float(ppo.ppo_objective(pol, thetas[m], one, eps_low=0.2, beta=0.5)) == pytest.approx(
            float(both[m]), abs=1e-15)
    hist = ppo.run_epochs(b, pol, batch, 5, 0.05)
    for m in range(3):
        one = ppo.make_batch(pol, th, batch.s[m], batch.a[m], batch.adv[m])
        h1 = ppo.run_epochs(b, pol, one, 5, 0.05)
        torch.testing.assert_close(h1.J, hist.J[:, m], rtol=0, atol=1e-14)


def test_batch_kl_is_the_mean_state_kl():
    b, pol, th = _world()
    batch = ppo.collect(b, pol, th, 16, pg.make_generator(5))
    t1 = th + 0.5 * torch.randn(12, dtype=F64, generator=pg.make_generator(6))
    per_state = E.state_kl(pol.log_probs(th), pol.log_probs(t1))
    assert float(ppo.batch_kl(pol, t1, batch)) == pytest.approx(float(per_state[batch.s].mean()),
                                                                abs=1e-15)
    assert float(ppo.batch_kl(pol, th, batch)) == 0.0


def test_clip_has_zero_gradient_outside_the_range_and_dual_clip_bounds():
    _b, pol, th = _world()
    batch = ppo.make_batch(pol, th, torch.tensor([0, 0]), torch.tensor([0, 1]),
                           torch.tensor([1.0, -1.0], dtype=F64))
    # push action 0's logit up: its ratio leaves 1 + ε (A > 0 term clipped), and the
    # ratio of action 1 falls below 1 − ε (A < 0 term clipped): the gradient vanishes
    t = th.clone()
    t[0] += 2.0
    t[1] -= 2.0
    g = torch.func.grad(lambda x: ppo.surrogate(pol, x, batch, 0.2))(t)
    assert torch.equal(g, torch.zeros_like(g))
    assert float(torch.func.grad(lambda x: ppo.surrogate(pol, x, batch))(t).abs().max()) > 1e-3
    r = torch.logspace(-2, 2, 200, dtype=F64)
    adv = torch.full_like(r, -1.0)
    dual = losses.ppo_dual_clip_loss(r.log(), adv, torch.zeros_like(r), dual_clip=3.0)
    assert float(dual.max()) == pytest.approx(3.0, abs=1e-15)
    torch.testing.assert_close(dual, ppo_clip_loss(r.log(), adv, torch.zeros_like(r),
                                                   dual_clip=3.0), rtol=0, atol=0)
    assert float(ppo_clip_loss(r.log(), adv, torch.zeros_like(r)).max()) > 99.0


def test_adaptive_beta_rule():
    assert ppo.adaptive_beta(1.0, 0.1, 0.01) == 2.0
    assert ppo.adaptive_beta(1.0, 0.001, 0.01) == 0.5
    assert ppo.adaptive_beta(1.0, 0.012, 0.01) == 1.0
    out = ppo.adaptive_beta(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.1, 0.001, 0.01]), 0.01)
    torch.testing.assert_close(out, torch.tensor([2.0, 0.5, 1.0]))


def test_run_epochs_records_and_unclipped_surrogate_rises():
    b, pol, th = _world()
    batch = ppo.collect(b, pol, th, (4, 16), pg.make_generator(7))
    h = ppo.run_epochs(b, pol, batch, 30, 0.5, optimizer="sgd")
    for name in ("surrogate", "objective", "J", "kl", "batch_kl", "clip_frac"):
        assert getattr(h, name).shape == (31, 4)
    J_old = b.J(pol.probs(th))
    torch.testing.assert_close(h.J[0], J_old.expand(4), rtol=0, atol=1e-15)
    assert float(h.kl[0].abs().max()) == 0.0
    assert bool((h.surrogate.diff(dim=0) > 0).all())  # gradient ascent on a smooth surrogate
    hc = ppo.run_epochs(b, pol, batch, 30, 0.5, eps_low=0.1, optimizer="sgd")
    hk = ppo.run_epochs(b, pol, batch, 30, 0.5, beta=10.0, optimizer="sgd")
    assert bool((hc.kl[-1] < h.kl[-1]).all()) and bool((hk.kl[-1] < h.kl[-1]).all())
    assert float(hc.clip_frac[-1].max()) > 0
    assert h.peak_epoch().shape == (4,)


def test_ppo_iterations_adapts_beta():
    b, pol, _ = _world()
    th0 = torch.zeros(12, dtype=F64)
    up = ppo.ppo_iterations(b, pol, th0, 6, 32, pg.make_generator(8), epochs=10, lr=0.1,
                            beta=0.01, kl_target=0.01)
    down = ppo.ppo_iterations(b, pol, th0, 6, 32, pg.make_generator(8), epochs=10, lr=0.1,
                              beta=100.0, kl_target=0.01)
    assert up["J"].shape == (7,) and up["kl"].shape == up["beta"].shape == (6,)
    assert float(up["beta"][-1]) > 0.01 and float(down["beta"][-1]) < 100.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision(dtype):
    b, pol, th = _world(dtype)
    batch = ppo.collect(b, pol, th, (2, 16), pg.make_generator(9))
    h = ppo.run_epochs(b, pol, batch, 5, 0.05, eps_low=0.2, beta=0.1)
    assert h.J.dtype == h.kl.dtype == h.theta.dtype == dtype
    b64, _, th64 = _world()
    ref = ppo.run_epochs(b64, pol, ppo.make_batch(pol, th64, batch.s, batch.a, batch.adv.double()),
                         5, 0.05, eps_low=0.2, beta=0.1)
    tol = 1e-4 if dtype == torch.float32 else 0.05
    assert float((h.J.double() - ref.J).abs().max()) < tol


def test_meta_device_shapes():
    pol = TabularSoftmax(3, 4)
    th = torch.zeros(12, dtype=F64, device="meta")
    s = torch.zeros(2, 5, dtype=torch.long, device="meta")
    batch = ppo.make_batch(pol, th, s, s, torch.zeros(2, 5, dtype=F64, device="meta"))
    thetas = torch.zeros(2, 12, dtype=F64, device="meta")
    out = ppo.ppo_objective(pol, thetas, batch, eps_low=0.2, beta=0.1)
    assert out.shape == (2,) and out.device.type == "meta"


def test_bad_inputs_raise():
    b, pol, th = _world()
    batch = ppo.collect(b, pol, th, 8, pg.make_generator(10))
    for eps in (0.0, -0.1):
        with pytest.raises(ValueError, match="eps"):
            ppo.run_epochs(b, pol, batch, 3, 0.1, eps_low=eps)
        with pytest.raises(ValueError, match="eps"):
            ppo.surrogate(pol, th, batch, eps_low=eps)
    with pytest.raises(ValueError, match="eps"):
        ppo.run_epochs(b, pol, batch, 3, 0.1, eps_low=1.5)
    with pytest.raises(ValueError, match="epochs"):
        ppo.run_epochs(b, pol, batch, 0, 0.1)
    with pytest.raises(ValueError, match="lr"):
        ppo.run_epochs(b, pol, batch, 3, -0.1)
    with pytest.raises(ValueError, match="beta"):
        ppo.run_epochs(b, pol, batch, 3, 0.1, beta=-1.0)
    with pytest.raises(ValueError, match="optimizer"):
        ppo.run_epochs(b, pol, batch, 3, 0.1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="PPOBatch"):
        ppo.run_epochs(b, pol, (batch.s, batch.a), 3, 0.1)
    with pytest.raises(ValueError, match="one shape"):
        ppo.make_batch(pol, th, batch.s, batch.a[:5], batch.adv)
    with pytest.raises(ValueError, match="one shape"):
        ppo.make_batch(pol, th, batch.s, batch.a, batch.adv[:5])
    with pytest.raises(ValueError, match="finite"):
        ppo.make_batch(pol, th, batch.s, batch.a, torch.full((8,), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="range"):
        ppo.make_batch(pol, th, batch.s + 5, batch.a, batch.adv)
    with pytest.raises(ValueError, match="theta"):
        ppo.surrogate(pol, th.expand(3, 12), batch)
    with pytest.raises(ValueError, match="eps"):
        ppo.surrogate(pol, th, batch, dual_clip=3.0)
    with pytest.raises(ValueError, match="kl_target"):
        ppo.adaptive_beta(1.0, 0.1, 0.0)


def test_methods_on_the_map():
    # PPO is first-order TRPO: its parent is TRPO, and it changes the step (natural →
    # gradient) and how the KL enters (constraint → penalty, or a clip instead)
    for name in ("PPO-KL", "PPO-clip"):
        m = pg.method(name)
        assert m.parent == "TRPO" and m.axis == "trajectory"
        assert m.changes()["step"] == ("natural", "gradient")
    assert pg.method("TRPO").parent == "Natural PG"
    assert pg.method("PPO-KL").resolved_parts()["kl"] == "kl_penalty"
    assert pg.method("PPO-clip").resolved_parts()["policy_loss"] == "ppo_clip"
    dual = pg.method("PPO dual-clip")
    assert dual.parent == "PPO-clip" and dual.axis == "trajectory"
    assert registry.get("policy_loss", "ppo_dual_clip").side == "trajectory"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.05, 0.5), c=st.floats(1.5, 5.0))
def test_property_clip_and_dual_clip(seed, eps, c):
    g = pg.make_generator(seed)
    logr = 3 * torch.randn(50, dtype=F64, generator=g)
    adv = torch.randn(50, dtype=F64, generator=g)
    old = torch.zeros(50, dtype=F64)
    logr.requires_grad_(True)
    loss = ppo_clip_loss(logr, adv, old, eps_low=eps, dual_clip=c)
    (grad,) = torch.autograd.grad(loss.sum(), logr)
    r = logr.detach().exp()
    outside = ((adv > 0) & (r > 1 + eps)) | ((adv < 0) & (r < 1 - eps)) | ((adv < 0) & (r > c))
    assert torch.equal(grad[outside], torch.zeros_like(grad[outside]))
    assert bool((grad[~outside] != 0).all())
    assert bool((loss.detach() <= (-c * adv).where(adv < 0, torch.full_like(adv, torch.inf))).all())
