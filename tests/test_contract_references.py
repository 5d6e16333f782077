"""pgbook equals the reference implementations where it claims to, and follows its documented
conventions where they differ: REINFORCE++-baseline (verl, OpenRLHF), the k3 clamp and the
always-on dual clip (verl), singleton groups and all-masked rows.

The reference formulas are transcribed here (never imported), each with the file and function
it comes from; the comparisons run on ragged masks, where the token-level and the
sequence-level whitening differ.
"""

from collections import defaultdict

import pytest
import torch

import pgbook as pg
from pgbook.kl import kl_estimate
from pgbook.reward.advantages import (
    broadcast_to_tokens,
    compute_advantages,
    group_mean_batch_std_seq_advantage,
    reinforce_pp_baseline_advantage,
)
from pgbook.trajectory.losses import ppo_clip_loss, ppo_dual_clip_loss


# -- transcriptions of the references -------------------------------------------------------
def verl_rpp_baseline(token_level_rewards, response_mask, index):
    """verl/trainer/ppo/core_algos.py, compute_reinforce_plus_plus_baseline_outcome_advantage,
    with verl/utils/torch_functional.py masked_mean / masked_var / masked_whiten."""
    def masked_mean(values, mask):
        return (values * mask).sum() / (mask.sum() + 1e-8)

    def masked_var(values, mask):
        mean = masked_mean(values, mask)
        variance = masked_mean((values - mean) ** 2, mask)
        mask_sum = mask.sum()
        return variance * (mask_sum / (mask_sum - 1))

    def masked_whiten(values, mask):
        mean, var = masked_mean(values, mask), masked_var(values, mask)
        return (values - mean) * torch.rsqrt(var + 1e-8)

    response_length = token_level_rewards.shape[-1]
    scores = token_level_rewards.sum(dim=-1)
    id2score, id2mean = defaultdict(list), {}
    for i in range(scores.shape[0]):
        id2score[index[i]].append(scores[i])
    for idx in id2score:
        if len(id2score[idx]) == 1:
            id2mean[idx] = torch.tensor(0.0, dtype=scores.dtype)
        else:
            id2mean[idx] = torch.mean(torch.stack(id2score[idx]))
    scores = scores.clone()
    for i in range(scores.shape[0]):
        scores[i] = scores[i] - id2mean[index[i]]
    scores = scores.unsqueeze(-1).tile([1, response_length]) * response_mask
    return masked_whiten(scores, response_mask) * response_mask


def openrlhf_reinforce_baseline(rewards, action_mask, n_samples_per_prompt):
    """openrlhf/trainer/ppo_utils/experience_maker.py, compute_advantages_and_returns with
    advantage estimator "reinforce_baseline" (no KL, γ = 1: get_cumulative_returns puts the
    centred reward on every valid token), then the normalisation over all experiences."""
    r = rewards.reshape(-1, n_samples_per_prompt)
    r = (r - r.mean(-1, keepdim=True)).reshape(-1)
    # compute_reward places r on the last valid token; the cumulative return (γ = 1) of every
    # earlier valid token is then r, and 0 after the last one
    last = action_mask.cumsum(-1) == action_mask.sum(-1, keepdim=True)
    token_r = torch.where(last & (action_mask > 0), r[:, None], torch.zeros_like(action_mask))
    returns = token_r.flip(-1).cumsum(-1).flip(-1) * action_mask
    num_actions = action_mask.sum()
    mean = (returns * action_mask).sum() / num_actions
    var = ((returns - mean).pow(2) * action_mask).sum() / num_actions
    return (returns - mean) * var.clamp(min=1e-8).rsqrt()


def outcome_tokens(R, mask):
    """Token-level rewards with R_i on the last valid token of row i (an outcome reward)."""
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & (mask > 0)
    return torch.where(last, R[:, None], torch.zeros_like(mask))


def ragged(n_groups=4, G=4, T=9, seed=0):
    g = pg.make_generator(seed)
    R = torch.randint(0, 2, (n_groups * G,), generator=g).double()
    R[:G] = torch.tensor([1.0, 0.0, 0.0, 0.5])  # not binary in one group
    lengths = torch.randint(1, T + 1, (n_groups * G,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    return R, mask, G


# -- REINFORCE++-baseline ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rpp_baseline_equals_verl_on_ragged_masks(seed):
    R, mask, G = ragged(seed=seed)
    index = [i // G for i in range(R.shape[0])]
    want = verl_rpp_baseline(outcome_tokens(R, mask), mask, index)
    got = broadcast_to_tokens(reinforce_pp_baseline_advantage(R, G, mask=mask, std_eps=0.0), mask)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rpp_baseline_equals_openrlhf_on_ragged_masks(seed):
    R, mask, G = ragged(seed=seed)
    want = openrlhf_reinforce_baseline(R, mask, G) * mask  # OpenRLHF leaves −μ/σ on padding
    adv = reinforce_pp_baseline_advantage(R, G, mask=mask, std_eps=0.0, unbiased=False)
    torch.testing.assert_close(broadcast_to_tokens(adv, mask), want, atol=1e-6, rtol=1e-6)


def test_sequence_level_variant_differs_on_ragged_masks_and_agrees_on_equal_lengths():
    R, mask, G = ragged(seed=0)
    tok = reinforce_pp_baseline_advantage(R, G, mask=mask)
    seq = group_mean_batch_std_seq_advantage(R, G)
    assert float((tok - seq).abs().max()) > 0.05   # the gap, on these lengths
    full = torch.ones_like(mask)
    c = R.view(-1, G) - R.view(-1, G).mean(1, keepdim=True)
    # equal lengths: the token mean of c is its plain mean, 0; σ²_tok = T Σc²/(NT − 1)
    n, T = R.shape[0], mask.shape[1]
    scale = ((T * c.pow(2).sum() / (n * T - 1)) / (c.pow(2).sum() / (n - 1))).sqrt()
    torch.testing.assert_close(reinforce_pp_baseline_advantage(R, G, mask=full, std_eps=0.0),
                               group_mean_batch_std_seq_advantage(R, G, std_eps=0.0) / scale)


def test_rpp_baseline_is_the_method_and_needs_the_mask():
    assert pg.methods.method_config("REINFORCE++-baseline")["advantage"] == "reinforce_pp_baseline"
    assert pg.registry.get("advantage", "reinforce_pp_baseline").form == "batch"
    R, mask, G = ragged()
    with pytest.raises(ValueError, match="mask"):
        reinforce_pp_baseline_advantage(R, G)
    # compute_advantages passes the mask, in any group order
    perm = torch.randperm(R.shape[0], generator=pg.make_generator(3))
    gid = (torch.arange(R.shape[0]) // G)[perm]
    got = compute_advantages(R[perm], "reinforce_pp_baseline", group_index=gid, mask=mask[perm])
    torch.testing.assert_close(got, reinforce_pp_baseline_advantage(R, G, mask=mask)[perm])


def test_rpp_singleton_groups_and_all_masked_rows():
    """Conventions: a group of one has c = 0 (OpenRLHF; verl keeps its raw reward), an
    all-masked row counts in its group's mean but gets Â = 0 and stays out of μ_tok, σ_tok."""
    R = torch.tensor([1.0, 0.0, 3.0, 0.5], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.float64)
    assert torch.equal(reinforce_pp_baseline_advantage(R, 1, mask=mask), torch.zeros(4, dtype=torch.float64))
    verl = verl_rpp_baseline(outcome_tokens(R, mask), mask, list(range(4)))
    assert float(verl.abs().max()) > 0.5  # verl: a singleton keeps its reward (whitened)
    # an all-masked row: Â = 0, the others as if it were absent from the token statistics
    mask2 = mask.clone()
    mask2[1] = 0
    adv = reinforce_pp_baseline_advantage(R, 2, mask=mask2, std_eps=0.0)
    assert adv[1] == 0
    c = torch.tensor([0.5, -0.5, 1.25, -1.25], dtype=torch.float64)   # group means 0.5, 1.75
    L = mask2.sum(-1)
    mu = (L * c).sum() / L.sum()
    sd = ((L * (c - mu) ** 2).sum() / (L.sum() - 1)).sqrt()
    torch.testing.assert_close(adv[[0, 2, 3]], ((c - mu) / sd)[[0, 2, 3]])


def test_rpp_zero_variance_batch_gives_zeros():
    R = torch.ones(6, dtype=torch.float64)
    mask = torch.ones(6, 3, dtype=torch.float64)
    assert torch.equal(reinforce_pp_baseline_advantage(R, 3, mask=mask), torch.zeros_like(R))
    one_token = torch.zeros(6, 3, dtype=torch.float64)
    one_token[0, 0] = 1
    R2 = torch.tensor([1.0, 0, 0, 1, 0, 0], dtype=torch.float64)
    assert torch.equal(reinforce_pp_baseline_advantage(R2, 3, mask=one_token), torch.zeros_like(R2))


# -- the k3 clamp and the dual clip -------------------------------------------------------------
def verl_k3(logprob, ref_logprob):
    """verl/trainer/ppo/core_algos.py, kl_penalty_forward, kl_penalty="low_var_kl"."""
    kl = torch.clamp(ref_logprob - logprob, min=-20, max=20)
    kld = torch.exp(kl) - kl - 1
    return torch.clamp(kld, min=-10, max=10)


def trl_k3(logp, ref_logp):
    """trl/trainer/grpo_trainer.py, GRPOTrainer._compute_loss: per_token_kl (no clamp)."""
    return torch.exp(ref_logp - logp) - (ref_logp - logp) - 1


def test_k3_convention_clamps_the_log_ratio_not_the_value():
    logp = torch.tensor([-0.1, -3.0, -30.0, -0.5, -200.0], dtype=torch.float64)
    ref = torch.tensor([-0.2, -0.1, -0.1, -0.5, -0.1], dtype=torch.float64)
    got = kl_estimate(logp, ref, "k3")
    small = (ref - logp).abs() <= 20
    torch.testing.assert_close(got[small], trl_k3(logp, ref)[small])     # TRL where no clamp
    assert float(got[1]) > 10 and float(verl_k3(logp, ref)[1]) == 10     # verl caps at 10; not us
    assert torch.isfinite(kl_estimate(logp.float(), ref.float(), "k3")).all()  # e^199 in float32
    torch.testing.assert_close(got[4], torch.tensor(torch.e ** 20 - 21, dtype=torch.float64))
    lp = logp.clone().requires_grad_(True)
    kl_estimate(lp, ref, "k3").sum().backward()
    assert lp.grad[4] == 0 and lp.grad[2] == 0 and lp.grad[1] != 0     # flat beyond the clamp


def verl_vanilla(old_log_prob, log_prob, advantages, cliprange=0.2, clip_ratio_c=3.0):
    """verl/trainer/ppo/core_algos.py, compute_policy_loss_vanilla: the per-token pg_losses
    before aggregation (the dual clip is always on)."""
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    return torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)


def test_dual_clip_convention_matches_verl_vanilla():
    g = pg.make_generator(0)
    old = -torch.rand(200, generator=g, dtype=torch.float64) * 3
    logp = old + torch.randn(200, generator=g, dtype=torch.float64) * 2
    logp[:3] = old[:3] + torch.tensor([25.0, -30.0, 1.5], dtype=torch.float64)  # past the clamp
    adv = torch.randn(200, generator=g, dtype=torch.float64)
    want = verl_vanilla(old, logp, adv)
    torch.testing.assert_close(ppo_dual_clip_loss(logp, adv, old), want)
    torch.testing.assert_close(pg.registry.get("policy_loss", "ppo_dual_clip").fn(logp, adv, old), want)
    # ppo_clip has the dual clip off (Schulman et al. 2017): it differs where A < 0, r > 3
    plain = ppo_clip_loss(logp, adv, old)
    differs = (adv < 0) & ((logp - old).exp() > 3)
    assert bool(differs.any())
    assert torch.equal(plain[~differs], want[~differs])
    assert bool((plain[differs] > want[differs]).all())


# -- singleton groups and all-masked rows elsewhere ---------------------------------------------
def test_singleton_groups_get_zero_advantage_where_verl_keeps_the_reward():
    R = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    for name in ("grpo", "grpo_mean", "group_mean_batch_std_seq"):
        assert torch.equal(pg.reward.advantages.compute_advantages(R, name, group_size=1),
                           torch.zeros(3, dtype=torch.float64)), name
    # verl/trainer/ppo/core_algos.py, compute_grpo_outcome_advantage: a singleton has mean 0
    # and std 1, so its advantage is its reward
    verl_singleton = (R - 0.0) / (1.0 + 1e-6)
    assert float(verl_singleton.abs().max()) > 0.5


def verl_agg_loss(loss_mat, loss_mask, loss_agg_mode):
    """verl/trainer/ppo/core_algos.py, agg_loss (dp_size = 1, no global sizes)."""
    if loss_agg_mode == "token-mean":
        return (loss_mat * loss_mask).sum() / loss_mask.sum()
    if loss_agg_mode == "seq-mean-token-sum":
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1)
        seq_mask = (torch.sum(loss_mask, dim=-1) > 0).float()
        return (seq_losses * seq_mask).sum() / seq_mask.sum()
    seq_mask = torch.sum(loss_mask, dim=-1)
    seq_losses = torch.sum(loss_mat * loss_mask, dim=-1) / (seq_mask + 1e-8)
    seq_mask = (seq_mask > 0).float()
    return (seq_losses * seq_mask).sum() / seq_mask.sum()


def test_all_masked_rows_are_left_out_of_the_sequence_means_as_in_verl():
    g = pg.make_generator(5)
    loss = torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = (torch.arange(6)[None, :] < torch.tensor([[6], [0], [2], [4]])).double()
    loss[1] = float("nan")   # an all-masked (padding) row may hold anything
    clean = torch.where(mask > 0, loss, torch.zeros_like(loss))
    for ours, theirs in (("token_mean", "token-mean"), ("seq_mean_token_sum", "seq-mean-token-sum"),
                         ("seq_mean_token_mean", "seq-mean-token-mean")):
        torch.testing.assert_close(pg.aggregation.aggregate(loss, mask, ours),
                                   verl_agg_loss(clean, mask, theirs), rtol=1e-7, atol=1e-12)
    # "constant" (Dr. GRPO) divides by every row, the padding row included
    torch.testing.assert_close(pg.aggregation.aggregate(loss, mask, "constant"),
                               clean.sum() / (4 * 6))
