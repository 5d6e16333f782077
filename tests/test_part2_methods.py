"""The GRPO family as its authors' code computes it (issue 9): GRPO is the DeepSeekMath recipe,
each later variant changes what its parent gets wrong, and the loss table is drawn from the
registry. Reference formulas are transcribed from TRL (huggingface/trl, trl/trainer/)."""

import pytest
import torch

import pgbook as pg
from pgbook import methods as rl
from pgbook.kl import kl_in_reward
from pgbook.reward import advantages as A
from pgbook.trajectory import tokens


def _batch(B=8, T=6, V=5, seed=0, dtype=torch.float64):
    g = pg.make_generator(seed)
    z = torch.randn(B, T, V, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    y = torch.randint(1, V, (B, T), generator=g)
    y[torch.arange(B), torch.randint(1, T, (B,), generator=g)] = 0   # an EOS in each row
    mask = tokens.response_mask(y, eos_id=0, prompt_len=1)
    r = torch.randint(0, 3, (B,), generator=g).to(torch.float64) / 2
    lp = tokens.token_logprobs(z, y)
    old = lp.detach() + 0.2 * torch.randn(lp.shape, generator=g, dtype=torch.float64).to(dtype)
    ref = lp.detach() - 0.3 * torch.randn(lp.shape, generator=g, dtype=torch.float64).to(dtype)
    return z, lp, old, ref, mask.to(dtype), r.to(dtype)


def _trl_group_advantages(rewards, G, scale=True):
    # trl/trainer/grpo_trainer.py, _generate_and_score_completions ("sum_then_normalize"):
    # advantages = rewards − mean_grouped; divided by (std_grouped + 1e-4), std with Bessel
    grouped = rewards.view(-1, G)
    mean = grouped.mean(1).repeat_interleave(G)
    std = grouped.std(1).repeat_interleave(G)
    adv = rewards - mean
    return adv / (std + 1e-4) if scale else adv


def _trl_clipped(per_token_logps, old_per_token_logps, advantages, eps_low=0.2, eps_high=0.2):
    # trl/trainer/grpo_trainer.py, _compute_loss (importance_sampling_level="token")
    coef_1 = torch.exp(per_token_logps - old_per_token_logps)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    return -torch.min(coef_1 * advantages[:, None], coef_2 * advantages[:, None])


def test_grpo_is_the_deepseekmath_recipe_as_trl_computes_it():
    z, lp, old, ref, mask, r = _batch()
    beta, G = 0.04, 4
    loss, _ = rl.method_loss("GRPO", lp, old, r, mask, G, ref_logp=ref, beta=beta, std_eps=1e-4)
    # trl/trainer/grpo_trainer.py, _compute_loss with loss_type="grpo":
    per_token_kl = torch.exp(ref - lp) - (ref - lp) - 1
    per_token_loss = _trl_clipped(lp, old, _trl_group_advantages(r, G)) + beta * per_token_kl
    want = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    torch.testing.assert_close(loss, want, rtol=0, atol=1e-14)
    (g1,) = torch.autograd.grad(loss, z, retain_graph=True)
    (g2,) = torch.autograd.grad(want, z)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-14)


def test_dr_grpo_as_trl_computes_it():
    _z, lp, old, ref, mask, r = _batch(seed=1)
    beta, G, T = 0.04, 4, lp.shape[1]
    loss, _ = rl.method_loss("Dr. GRPO", lp, old, r, mask, G, ref_logp=ref, beta=beta, max_tokens=T)
    # trl/trainer/grpo_trainer.py: scale_rewards="none", loss_type="dr_grpo"
    per_token_kl = torch.exp(ref - lp) - (ref - lp) - 1
    per_token_loss = _trl_clipped(lp, old, _trl_group_advantages(r, G, scale=False)) \
        + beta * per_token_kl
    want = (per_token_loss * mask).sum() / (per_token_loss.size(0) * T)
    torch.testing.assert_close(loss, want, rtol=0, atol=1e-14)


def test_rloo_gradient_equals_trl_on_the_first_update():
    z, lp, _, ref, mask, r = _batch(seed=2)
    old = lp.detach()                    # the first (and, in TRL's default, only) update
    beta, G = 0.05, 4
    loss, _ = rl.method_loss("RLOO", lp, old, r, mask, G, ref_logp=ref, beta=beta)
    # trl/trainer/rloo_trainer.py, _generate_and_score_completions: k1 of the sampling policy
    # summed over tokens, subtracted from the reward; leave-one-out baseline
    kl = ((old - ref) * mask).sum(-1)
    rewards = (r - beta * kl).view(-1, G)
    adv = (rewards - (rewards.sum(1, keepdim=True) - rewards) / (G - 1)).reshape(-1)
    # ... and _compute_loss: a PPO clip on the *sequence* ratio, mean over sequences
    logps = (lp * mask).sum(1)
    coef_1 = torch.exp(logps - (old * mask).sum(1))
    coef_2 = torch.clamp(coef_1, 0.8, 1.2)
    want = (-torch.min(coef_1 * adv, coef_2 * adv)).mean()
    (g1,) = torch.autograd.grad(loss, z, retain_graph=True)
    (g2,) = torch.autograd.grad(want, z)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-14)


def test_kl_in_the_reward_uses_the_sampling_policy_log_probs():
    """method_loss shapes the reward with old_logp (the rollout's), as the trainer, verl and
    TRL do; with the current logp the loss would differ after the first epoch."""
    _z, lp, old, ref, mask, r = _batch(seed=3)
    beta, G = 0.5, 4
    loss, _ = rl.method_loss("RLOO", lp, old, r, mask, G, ref_logp=ref, beta=beta)

    def by_hand(sampler):
        shaped = kl_in_reward(r, sampler, ref, mask, beta)
        adv = A.broadcast_to_tokens(A.rloo_advantage(shaped, G), mask)
        return rl.policy_loss(lp, old, adv, mask, aggregation="seq_mean_token_sum")[0]

    torch.testing.assert_close(loss, by_hand(old), rtol=0, atol=1e-15)
    assert abs(float((loss - by_hand(lp.detach())).detach())) > 1e-3
    # on-policy (old_logp None) it falls back to the current log-probs
    on, _ = rl.method_loss("RLOO", lp, None, r, mask, G, ref_logp=ref, beta=beta)
    shaped = kl_in_reward(r, lp.detach(), ref, mask, beta)
    adv = A.broadcast_to_tokens(A.rloo_advantage(shaped, G), mask)
    torch.testing.assert_close(on, rl.policy_loss(lp, None, adv, mask,
                                                  aggregation="seq_mean_token_sum")[0],
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_family_runs_in_every_dtype(dtype):
    z, lp, old, ref, mask, r = _batch(seed=4, dtype=dtype)
    for name in ("GRPO", "RLOO", "Dr. GRPO", "REINFORCE++-baseline"):
        loss, _ = rl.method_loss(name, lp, old, r, mask, 4, ref_logp=ref, beta=0.04)
        assert loss.dtype == lp.dtype and bool(torch.isfinite(loss))   # float32 for bfloat16 logits
        (g,) = torch.autograd.grad(loss, z, retain_graph=True)
        assert g.dtype == dtype and bool(torch.isfinite(g).all())


def test_family_tree_and_what_changed():
    tree = {m.name: m for m in pg.registry.methods()}
    # GRPO removes PPO's critic: its parent is PPO as LLM trainers ran it, with a value head
    assert tree["GRPO"].parent == "PPO (value head, GAE)"
    assert tree["GRPO"].changes() == {"advantage": ("gae", "grpo"),
                                      "aggregation": ("token_mean", "seq_mean_token_mean"),
                                      "kl": ("none", "k3_loss")}
    assert tree["Dr. GRPO"].parent == "GRPO"
    assert tree["Dr. GRPO"].changes() == {"advantage": ("grpo", "grpo_mean"),
                                          "aggregation": ("seq_mean_token_mean", "constant")}
    assert tree["RLOO"].parent == "GRPO" and set(tree["RLOO"].changes()) == \
        {"advantage", "aggregation", "kl"} and tree["RLOO"].axis == "reward"
    assert tree["REINFORCE++-baseline"].parent == "GRPO"
    assert "GRPO (DeepSeekMath)" not in tree          # GRPO *is* the DeepSeekMath recipe


def test_bandit_sample_mean_reads_as_the_reinforce_sum_over_tokens():
    assert rl.method_config("REINFORCE")["aggregation"] == "seq_mean_token_sum"
    # for one-token responses (a bandit) every aggregation but "constant" is the sample mean
    g = pg.make_generator(5)
    x = torch.randn(6, 1, generator=g, dtype=torch.float64)
    m = torch.ones(6, 1, dtype=torch.float64)
    for mode in ("seq_mean_token_sum", "seq_mean_token_mean", "token_mean"):
        torch.testing.assert_close(pg.aggregation.aggregate(x, m, mode), x.mean(), rtol=0, atol=1e-15)


def test_loss_table():
    rows = rl.loss_table(["REINFORCE", "PPO-clip", "GRPO", "RLOO"])
    assert [r["method"] for r in rows] == ["REINFORCE", "PPO-clip", "GRPO", "RLOO"]
    grpo = rows[2]
    assert grpo["side"] == "both" and grpo["parent"] == "PPO (value head, GAE)"
    assert grpo["call"].startswith('method_loss("GRPO"') and "beta" in grpo["call"]
    assert "kl: none → k3_loss" in grpo["changed"]
    assert rows[0]["call"].startswith("policy_loss(logp, None") and 'loss="score_function"' in rows[0]["call"]
    every = rl.loss_table()
    assert "J(θ)" not in [r["method"] for r in every] and len(every) >= 10
    md = rl.loss_table(["GRPO", "Dr. GRPO"], markdown=True)
    assert isinstance(md, str) and md.count("\n") == 3 and md.startswith("| method |")
    with pytest.raises(ValueError, match="expected one of"):
        rl.loss_table(["GRPO-9000"])
    with pytest.raises(ValueError, match="no policy loss"):
        rl.loss_table(["J(θ)"])
    with pytest.raises(ValueError, match="list of method names"):
        rl.loss_table("GRPO")
