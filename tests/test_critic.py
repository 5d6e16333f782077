"""Unit tests for pgbook.reward.critic: TD residuals, GAE and the (clipped) value loss."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook import registry
from pgbook.reward import critic as C

F64 = torch.float64


# -- the reference formulas, transcribed -----------------------------------------------------
def verl_masked_whiten(values, mask):
    """verl/utils/torch_functional.py: masked_mean, masked_var (unbiased), masked_whiten."""
    mean = (values * mask).sum() / (mask.sum() + 1e-8)
    centered = values - mean
    var = (centered ** 2 * mask).sum() / (mask.sum() + 1e-8)
    var = var * mask.sum() / (mask.sum() - 1)
    return (values - mean) * torch.rsqrt(var + 1e-8)


def verl_compute_gae_advantage_return(token_level_rewards, values, response_mask, gamma, lam):
    """verl/trainer/ppo/core_algos.py: compute_gae_advantage_return (its loop, transcribed)."""
    nextvalues = 0
    lastgaelam = 0
    advantages_reversed = []
    gen_len = token_level_rewards.shape[-1]
    for t in reversed(range(gen_len)):
        delta = token_level_rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam_ = delta + gamma * lam * lastgaelam
        nextvalues = values[:, t] * response_mask[:, t] + (1 - response_mask[:, t]) * nextvalues
        lastgaelam = lastgaelam_ * response_mask[:, t] + (1 - response_mask[:, t]) * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = advantages + values
    advantages = verl_masked_whiten(advantages, response_mask)
    return advantages, returns


def verl_compute_value_loss(vpreds, returns, values, response_mask, cliprange_value):
    """verl/trainer/ppo/core_algos.py: compute_value_loss with loss_agg_mode="token-mean"
    (the same formula as TRL's PPOTrainer vf_loss, trl/experimental/ppo/ppo_trainer.py)."""
    vpredclipped = torch.max(torch.min(vpreds, values + cliprange_value), values - cliprange_value)
    vf_losses1 = (vpreds - returns) ** 2
    vf_losses2 = (vpredclipped - returns) ** 2
    clipped_vf_losses = torch.max(vf_losses1, vf_losses2)
    vf_loss = 0.5 * (clipped_vf_losses * response_mask).sum() / response_mask.sum()
    vf_clipfrac = (torch.gt(vf_losses2, vf_losses1).float() * response_mask).sum() / (response_mask.sum() + 1e-8)
    return vf_loss, vf_clipfrac


def _batch(B=5, T=7, seed=0, dtype=F64, holes=True):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(B, T, generator=g, dtype=dtype)
    v = torch.randn(B, T, generator=g, dtype=dtype)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    m = (torch.arange(T) < lengths[:, None]).to(dtype)
    if holes:                                # an observation token in the middle of some rows
        m[0, 1] = 0.0 if lengths[0] > 2 else m[0, 1]
        m[2, 3] = 0.0 if lengths[2] > 4 else m[2, 3]
    m[min(1, B - 1)] = 1.0                     # one row runs to T (cut)
    return r, v, m


# -- GAE equals verl --------------------------------------------------------------------------
@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (1.0, 0.95), (0.9, 0.5), (0.99, 0.0), (0.0, 0.7)])
@pytest.mark.parametrize("holes", [False, True])
def test_gae_equals_verl_on_every_unmasked_position(gamma, lam, holes):
    r, v, m = _batch(holes=holes)
    want_adv, want_ret = verl_compute_gae_advantage_return(r, v, m, gamma, lam)
    adv, ret = C.gae(r, v, m, gamma, lam, whiten=True)
    on = m.bool()
    torch.testing.assert_close(adv[on], want_adv[on], rtol=0, atol=1e-12)
    torch.testing.assert_close(ret[on], want_ret[on], rtol=0, atol=1e-12)
    assert bool((adv[~on] == 0).all()) and bool((ret[~on] == 0).all())
    # unwhitened: verl's advantages before masked_whiten are returns − values
    raw, _ = C.gae(r, v, m, gamma, lam)
    torch.testing.assert_close(raw[on], (want_ret - v)[on], rtol=0, atol=1e-12)


def test_gae_by_hand_and_the_two_limits():
    # one row, rewards (0, 0, 1), values (0.2, 0.5, 0.9), γ = 1: δ = (0.3, 0.4, 0.1)
    r = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)
    v = torch.tensor([[0.2, 0.5, 0.9]], dtype=F64)
    m = torch.ones_like(r)
    delta = C.td_residuals(r, v, m)
    torch.testing.assert_close(delta, torch.tensor([[0.3, 0.4, 0.1]], dtype=F64), rtol=0, atol=1e-15)
    adv, ret = C.gae(r, v, m, 1.0, 0.5)
    want = torch.tensor([[0.3 + 0.5 * 0.4 + 0.25 * 0.1, 0.4 + 0.5 * 0.1, 0.1]], dtype=F64)
    torch.testing.assert_close(adv, want, rtol=0, atol=1e-15)
    torch.testing.assert_close(ret, want + v, rtol=0, atol=1e-15)
    # λ = 1: the return minus the value;  λ = 0: the TD residual
    torch.testing.assert_close(C.gae(r, v, m, 1.0, 1.0)[0], 1.0 - v, rtol=0, atol=1e-15)
    torch.testing.assert_close(C.gae(r, v, m, 1.0, 0.0)[0], delta, rtol=0, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 4), T=st.integers(1, 6), seed=st.integers(0, 10_000),
       gamma=st.floats(0, 1), lam=st.floats(0, 1))
def test_gae_is_the_discounted_sum_of_td_residuals(B, T, seed, gamma, lam):
    """Â_t = Σ_l (γλ)^l δ_{t+l} on a response mask (no holes), and the λ-return identity."""
    r, v, m = _batch(B, T, seed, holes=False)
    delta = C.td_residuals(r, v, m, gamma)
    adv, ret = C.gae(r, v, m, gamma, lam)
    k = torch.arange(T)
    w = torch.where(k[None, :] >= k[:, None], (gamma * lam) ** (k[None, :] - k[:, None]).clamp(min=0).to(F64),
                    torch.zeros((), dtype=F64))
    torch.testing.assert_close(adv, delta @ w.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, (adv + v) * m, rtol=0, atol=1e-12)


def test_masked_positions_are_skipped_like_verl():
    """A hole in the mask: the residual before it bootstraps from the value after it."""
    r = torch.tensor([[1.0, 5.0, 2.0]], dtype=F64)       # the 5.0 sits on a masked token
    v = torch.tensor([[0.5, 9.0, 0.25]], dtype=F64)
    m = torch.tensor([[1.0, 0.0, 1.0]], dtype=F64)
    delta = C.td_residuals(r, v, m, 0.5)
    torch.testing.assert_close(delta, torch.tensor([[1.0 + 0.5 * 0.25 - 0.5, 0.0, 2.0 - 0.25]], dtype=F64),
                               rtol=0, atol=1e-15)


def test_bootstrap_column():
    """(B, T + 1) values: the last column is used after each row's last unmasked token."""
    r, v, m = _batch(holes=False)
    boot = torch.linspace(-1, 1, r.shape[0], dtype=F64)
    adv, ret = C.gae(r, torch.cat([v, boot[:, None]], 1), m, 0.9, 0.8)
    # the same as adding γ · bootstrap to each row's last reward
    last = m.sum(1).long() - 1
    r2 = r.clone()
    r2[torch.arange(r.shape[0]), last] += 0.9 * boot
    adv2, ret2 = C.gae(r2, v, m, 0.9, 0.8)
    torch.testing.assert_close(adv, adv2, rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, ret2, rtol=0, atol=1e-12)
    # a zero bootstrap column is the (B, T) convention
    torch.testing.assert_close(C.gae(r, torch.cat([v, torch.zeros_like(v[:, :1])], 1), m)[0],
                               C.gae(r, v, m)[0], rtol=0, atol=0)


def test_whiten_matches_verl_and_shift_mean():
    _, v, m = _batch()
    torch.testing.assert_close(C.whiten(v, m), verl_masked_whiten(v, m), rtol=0, atol=1e-12)
    w = C.whiten(v, m, shift_mean=False)
    mean = (v * m).sum() / (m.sum() + 1e-8)                  # verl's masked_mean
    torch.testing.assert_close(w, verl_masked_whiten(v, m) + mean, rtol=0, atol=1e-12)


# -- the value loss ---------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.05, 0.2, 0.5])
def test_value_loss_equals_verl(eps):
    _, v_old, m = _batch(seed=3)
    g = torch.Generator().manual_seed(4)
    v_new = (v_old + 0.3 * torch.randn(v_old.shape, generator=g, dtype=F64)).requires_grad_(True)
    ret = torch.randn(v_old.shape, generator=g, dtype=F64)
    want, want_frac = verl_compute_value_loss(v_new, ret, v_old, m, eps)
    got, met = C.value_loss(v_new, ret, m, old_values=v_old, eps_value=eps)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(met["clip_fraction"], want_frac.to(F64), rtol=0, atol=1e-7)
    g1 = torch.autograd.grad(got, v_new)[0]
    g2 = torch.autograd.grad(want, v_new)[0]
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-12)
    assert 0 < float(met["clip_fraction"]) < 1 or eps == 0.5


def test_value_loss_without_clip_is_half_mse_and_other_aggregations():
    r, v, m = _batch(seed=5)
    ret = r
    loss, met = C.value_loss(v, ret, m)
    want = 0.5 * ((v - ret) ** 2 * m).sum() / m.sum()
    torch.testing.assert_close(loss, want, rtol=0, atol=1e-14)
    torch.testing.assert_close(met["value_error"], (2 * want).sqrt(), rtol=0, atol=1e-14)
    assert float(met["clip_fraction"]) == 0.0
    loss2, _ = C.value_loss(v, ret, m, aggregation="seq_mean_token_sum")
    torch.testing.assert_close(loss2, (0.5 * (v - ret) ** 2 * m).sum() / m.shape[0], rtol=0, atol=1e-14)


def test_value_loss_nan_off_mask_does_not_leak():
    r, v, m = _batch(seed=6, holes=False)
    v = v.clone()
    v[m == 0] = float("nan")
    v.requires_grad_(True)
    loss, _ = C.value_loss(v, r, m)
    loss.backward()
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(v.grad).all())


# -- registry -----------------------------------------------------------------------------------
def test_gae_is_a_registered_reward_side_critic_advantage():
    comp = registry.get("advantage", "gae")
    assert comp.side == "reward" and comp.form == "critic" and comp.fn is C.gae
    assert registry.resolve("advantage", "gae", "critic") is C.gae
    with pytest.raises(ValueError, match="not a group estimator"):
        pg.reward.compute_advantages(torch.ones(4), "gae", group_size=2)


# -- dtypes, devices, bad input -------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
def test_dtypes(dtype, tol):
    r, v, m = _batch()
    want, want_ret = C.gae(r, v, m, 0.95, 0.9, whiten=True)
    adv, ret = C.gae(r.to(dtype), v.to(dtype), m.to(dtype), 0.95, 0.9, whiten=True)
    assert adv.dtype == dtype and ret.dtype == dtype
    torch.testing.assert_close(adv.to(F64), want, rtol=tol, atol=tol * 10)
    torch.testing.assert_close(ret.to(F64), want_ret, rtol=tol, atol=tol * 10)
    assert C.td_residuals(r.to(dtype), v.to(dtype), m.bool()).dtype == dtype
    vl = v.to(dtype).requires_grad_(True)
    loss, _ = C.value_loss(vl, r.to(dtype), m, old_values=v.to(dtype), eps_value=0.2)
    loss.backward()
    assert loss.dtype == dtype and vl.grad.dtype == dtype


def test_meta_device_shapes():
    r = torch.empty(3, 6, device="meta")
    v = torch.empty(3, 7, device="meta")
    m = torch.empty(3, 6, device="meta")
    adv, ret = C.gae(r, v, m, 1.0, 0.9, whiten=True)
    assert adv.device.type == "meta" and adv.shape == (3, 6) and ret.shape == (3, 6)
    assert C.td_residuals(r, v[:, :6], m).shape == (3, 6)
    loss, _ = C.value_loss(torch.empty(3, 6, device="meta"), r, m)
    assert loss.device.type == "meta" and loss.shape == ()


def test_bad_inputs():
    r, v, m = _batch()
    with pytest.raises(ValueError, match="values: expected shape"):
        C.gae(r, v[:, :-2], m)
    with pytest.raises(ValueError, match="mask: expected shape"):
        C.gae(r, v, m[:, :-1])
    with pytest.raises(ValueError, match="token_rewards: expected 2 dimension"):
        C.gae(r[0], v, m)
    with pytest.raises(ValueError, match="lam: expected a number in"):
        C.gae(r, v, m, 1.0, 1.5)
    with pytest.raises(ValueError, match="gamma"):
        C.gae(r, v, m, -0.1)
    with pytest.raises(ValueError, match="gamma: expected a finite"):
        C.td_residuals(r, v, m, float("nan"))
    bad = r.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="token_rewards: expected finite"):
        C.gae(bad, v, m)
    badv = v.clone()
    badv[1, 2] = float("inf")
    with pytest.raises(ValueError, match="values: expected finite"):
        C.td_residuals(r, badv, m)
    with pytest.raises(ValueError, match="mask: the mask is all zero"):
        C.gae(r, v, torch.zeros_like(m))
    with pytest.raises(ValueError, match="0/1 mask"):
        C.gae(r, v, m * 0.5)
    with pytest.raises(ValueError, match="whiten: expected True or False"):
        C.gae(r, v, m, whiten="yes")
    with pytest.raises(ValueError, match="at least 2 unmasked"):
        C.gae(r[:1, :2], v[:1, :2], torch.tensor([[1.0, 0.0]], dtype=F64), whiten=True)
    with pytest.raises(ValueError, match="one device"):
        C.gae(r, v.to("meta"), m)
    with pytest.raises(ValueError, match="token_rewards: expected a floating"):
        C.gae(r.long(), v, m)
    # the value loss
    with pytest.raises(ValueError, match="returns: expected shape"):
        C.value_loss(v, r[:, :-1], m)
    with pytest.raises(ValueError, match="old_values: eps_value clips"):
        C.value_loss(v, r, m, eps_value=0.2)
    with pytest.raises(ValueError, match="old_values: given without eps_value"):
        C.value_loss(v, r, m, old_values=v)
    with pytest.raises(ValueError, match="eps_value: expected a number >"):
        C.value_loss(v, r, m, old_values=v, eps_value=0.0)
    with pytest.raises(ValueError, match="aggregation: expected one of"):
        C.value_loss(v, r, m, aggregation="mean")
    with pytest.raises(ValueError, match="old_values: expected shape"):
        C.value_loss(v, r, m, old_values=v[:, :-1], eps_value=0.1)
