"""Unit tests for pgbook.rl (the composed loss, named methods) and the KL additions of
pgbook.losses (kl_in_reward, registered KL placements)."""

import pytest
import torch

import pgbook as pg
from pgbook import kl as KL
from pgbook import methods as rl
from pgbook import registry
from pgbook.reward import advantages as A
from pgbook.trajectory import losses, tokens


def _batch(B=8, T=6, V=5, dtype=torch.float64, seed=0):
    g = pg.make_generator(seed)
    z = torch.randn(B, T, V, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    y = torch.randint(1, V, (B, T), generator=g)
    y[torch.arange(B), torch.randint(1, T, (B,), generator=g)] = 0   # an EOS in each row
    mask = tokens.response_mask(y, eos_id=0, prompt_len=1)
    r = torch.randint(0, 2, (B,), generator=g).to(torch.float64)
    return z, y, mask, r, g


def test_on_policy_ppo_clip_is_reinforce():
    z, y, mask, r, _ = _batch()
    lp = tokens.token_logprobs(z, y)
    adv = A.broadcast_to_tokens(A.grpo_advantage(r, 4), mask)
    for agg in ("token_mean", "seq_mean_token_mean", "constant"):
        loss, _ = rl.policy_loss(lp, None, adv, mask, aggregation=agg)
        (g1,) = torch.autograd.grad(loss, z, retain_graph=True)
        ref = pg.aggregation.aggregate(losses.score_function_loss(lp, adv), mask, agg)
        (g2,) = torch.autograd.grad(ref, z, retain_graph=True)
        torch.testing.assert_close(g1, g2, rtol=0, atol=1e-15)


def test_off_policy_matches_manual_and_metrics():
    z, y, mask, r, g = _batch(seed=1)
    lp = tokens.token_logprobs(z, y)
    old = lp.detach() + 0.3 * torch.randn(lp.shape, generator=g, dtype=torch.float64)
    adv = A.broadcast_to_tokens(A.rloo_advantage(r, 4), mask)
    loss, met = rl.policy_loss(lp, old, adv, mask, aggregation="token_mean", eps_low=0.2, eps_high=0.28)
    per = losses.ppo_clip_loss(lp, adv, old, eps_low=0.2, eps_high=0.28)
    m = mask.bool()
    torch.testing.assert_close(loss, per[m].mean(), rtol=0, atol=1e-14)
    torch.testing.assert_close(met["pg_loss"], per[m].mean().detach(), rtol=0, atol=1e-14)
    clip = losses.clip_fraction(lp, old, adv, 0.2, 0.28)
    torch.testing.assert_close(met["clip_fraction"], clip[m].double().mean(), rtol=0, atol=1e-15)
    assert 0 < float(met["clip_fraction"]) < 1
    torch.testing.assert_close(met["ratio_mean"], (lp - old).exp()[m].mean().detach())
    assert int(met["tokens"]) == int(mask.sum())
    assert not met["pg_loss"].requires_grad
    # other registered losses and options pass through
    l2, _ = rl.policy_loss(lp, old, adv, mask, loss="importance_weighted", aggregation="token_mean")
    torch.testing.assert_close(l2, losses.importance_weighted_loss(lp, adv, old)[m].mean())
    l3, _ = rl.policy_loss(lp, old, adv, mask, aggregation="token_mean", dual_clip=3.0)
    torch.testing.assert_close(l3, losses.ppo_clip_loss(lp, adv, old, dual_clip=3.0)[m].mean())


@pytest.mark.parametrize("kl", ["k1_loss", "k2_loss", "k3_loss"])
def test_kl_in_the_loss(kl):
    z, y, mask, r, g = _batch(seed=2)
    lp = tokens.token_logprobs(z, y)
    ref = lp.detach() - 0.1 + 0.2 * torch.rand(lp.shape, generator=g, dtype=torch.float64)
    adv = A.broadcast_to_tokens(A.grpo_advantage(r, 4), mask)
    base, _ = rl.policy_loss(lp, None, adv, mask)
    loss, met = rl.policy_loss(lp, None, adv, mask, ref_logp=ref, kl=kl, beta=0.1)
    k = KL.kl_estimate(lp, ref, kl[:2])
    extra = pg.aggregation.aggregate(k, mask, "seq_mean_token_mean")
    torch.testing.assert_close(loss, base + 0.1 * extra, rtol=0, atol=1e-14)
    torch.testing.assert_close(met["kl"], k[mask.bool()].mean().detach(), rtol=0, atol=1e-14)
    assert registry.get("kl", kl).side == "trajectory"


def test_kl_in_reward():
    z, y, mask, r, g = _batch(seed=3)
    lp = tokens.token_logprobs(z, y)
    ref = lp.detach() + 0.1 * torch.randn(lp.shape, generator=g, dtype=torch.float64)
    out = KL.kl_in_reward(r, lp, ref, mask, beta=0.5)
    want = r - 0.5 * ((lp.detach() - ref) * mask).sum(-1)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-14)
    assert not out.requires_grad
    assert registry.get("kl", "k1_in_reward").side == "reward"
    torch.testing.assert_close(registry.get("kl", "k1_in_reward")(lp, ref), (lp - ref).detach())
    # padding values cannot leak into the reward
    bad = lp.detach().clone()
    bad[~mask.bool()] = float("-inf")
    torch.testing.assert_close(KL.kl_in_reward(r, bad, ref, mask, 0.5), want, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="one row per reward"):
        KL.kl_in_reward(r[:4], lp, ref, mask, 0.5)
    with pytest.raises(ValueError, match="beta"):
        KL.kl_in_reward(r, lp, ref, mask, -1.0)
    with pytest.raises(ValueError, match="kind"):
        KL.kl_in_reward(r, lp, ref, mask, 0.5, kind="k4")


def test_masked_garbage_never_reaches_the_gradient():
    z, y, mask, r, _g = _batch(seed=4)
    lp = tokens.token_logprobs(z, y)
    pad = ~mask.bool()
    lp_bad = torch.where(pad, torch.full_like(lp, float("nan")), lp)
    old = torch.where(pad, torch.full_like(lp, float("-inf")), lp.detach() + 0.1)
    adv = torch.where(pad, torch.full_like(lp, float("nan")),
                      A.broadcast_to_tokens(A.grpo_advantage(r, 4), mask))
    ref = torch.where(pad, torch.full_like(lp, float("inf")), lp.detach())
    loss, met = rl.policy_loss(lp_bad, old, adv, mask, ref_logp=ref, kl="k3_loss", beta=0.1)
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.isfinite(loss) and bool(torch.isfinite(grad).all())
    assert all(bool(torch.isfinite(v)) for v in met.values())


def test_policy_loss_bad_inputs():
    z, y, mask, r, _ = _batch(seed=5)
    lp = tokens.token_logprobs(z, y)
    adv = A.broadcast_to_tokens(A.grpo_advantage(r, 4), mask)
    with pytest.raises(ValueError, match="beta"):
        rl.policy_loss(lp, None, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="reward"):
        rl.policy_loss(lp, None, adv, mask, kl="k1_in_reward", ref_logp=lp, beta=0.1)
    with pytest.raises(ValueError, match="ref_logp"):
        rl.policy_loss(lp, None, adv, mask, kl="k3_loss", beta=0.1)
    with pytest.raises(ValueError, match="takes no option"):
        rl.policy_loss(lp, None, adv, mask, loss="score_function", clip=0.2)
    with pytest.raises(ValueError, match="label"):
        rl.policy_loss(lp, None, adv, mask, loss="exact")
    with pytest.raises(ValueError, match="expected one of"):
        rl.policy_loss(lp, None, adv, mask, aggregation="mean")
    with pytest.raises(ValueError, match="shape"):
        rl.policy_loss(lp, None, adv[:, :3], mask)
    with pytest.raises(ValueError, match="all zero"):
        rl.policy_loss(lp, None, adv, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="dimension"):
        rl.policy_loss(lp[0], None, adv[0], mask[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_dtypes_end_to_end(dtype):
    z, y, mask, r, _g = _batch(dtype=dtype, seed=6)
    lp = tokens.token_logprobs(z, y, chunk_size=3)
    old = lp.detach() + 0.05
    ref = lp.detach() - 0.05
    loss, _met = rl.method_loss("GRPO", lp, old, r.to(dtype), mask, 4,
                               ref_logp=ref, beta=0.04)
    assert loss.dtype == lp.dtype
    loss.backward()
    assert z.grad.dtype == dtype and bool(torch.isfinite(z.grad).all())


def test_meta_device():
    z = torch.empty(4, 5, 7, device="meta", requires_grad=True)
    y = torch.empty(4, 5, dtype=torch.long, device="meta")
    lp = tokens.token_logprobs(z, y)
    mask = torch.empty(4, 5, device="meta")
    r = torch.empty(4, device="meta")
    for name in ("GRPO", "RLOO", "Dr. GRPO", "REINFORCE++-baseline"):
        loss, _met = rl.method_loss(name, lp, lp.detach(), r, mask, 2)
        assert loss.device.type == "meta" and loss.shape == ()
    loss, _ = rl.method_loss("GRPO", lp, None, r, mask, 2, ref_logp=lp.detach(), beta=0.1)
    loss.backward()
    assert z.grad.device.type == "meta"


def test_method_configs_and_sides():
    cfg = rl.method_config("GRPO")       # the DeepSeekMath recipe (Shao et al. 2024, eq. 3)
    assert cfg == dict(advantage="grpo", policy_loss="ppo_clip",
                       aggregation="seq_mean_token_mean", kl="k3_loss")
    assert rl.method_config("Dr. GRPO") == dict(cfg, advantage="grpo_mean", aggregation="constant")
    assert rl.method_config("RLOO") == dict(cfg, advantage="rloo", aggregation="seq_mean_token_sum",
                                            kl="k1_in_reward")
    assert rl.method_config("REINFORCE++-baseline")["advantage"] == "reinforce_pp_baseline"
    # relative to PPO-clip GRPO changes the advantage and the aggregation (reward side) and
    # adds a KL term to the loss (trajectory side)
    assert pg.method("GRPO").sides() == {"reward", "trajectory"}
    assert pg.method("RLOO").sides() == {"reward"}
    assert pg.method("Dr. GRPO").sides() == {"reward"}


def test_method_loss_matches_the_pieces():
    z, y, mask, r, g = _batch(seed=7)
    lp = tokens.token_logprobs(z, y)
    old = lp.detach() + 0.2 * torch.randn(lp.shape, generator=g, dtype=torch.float64)
    for name, adv_name, agg in [("GRPO", "grpo", None), ("RLOO", "rloo", None),
                                ("Dr. GRPO", "grpo_mean", "constant")]:   # β = 0: no KL term
        cfg = rl.method_config(name)
        loss, met = rl.method_loss(name, lp, old, r, mask, 4)
        adv = A.broadcast_to_tokens(A.compute_advantages(r, adv_name, group_size=4), mask)
        want, _ = rl.policy_loss(lp, old, adv, mask, aggregation=agg or cfg["aggregation"])
        torch.testing.assert_close(loss, want, rtol=0, atol=1e-15)
        assert float(met["zero_variance_fraction"]) == float(A.zero_variance_groups(r, 4).double().mean())
    with pytest.raises(ValueError, match="no KL"):
        rl.method_loss("PPO-clip", lp, old, r, mask, 4, beta=0.1)
    with pytest.raises(ValueError, match="divisor"):
        rl.method_loss("GRPO", lp, old, r, mask, 3)
    with pytest.raises(ValueError, match="not a group estimator"):
        rl.method_loss("REINFORCE + baseline", lp, old, r, mask, 4)
    with pytest.raises(ValueError, match="expected one of"):
        rl.method_config("GRPO-9000")
