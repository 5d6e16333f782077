"""Exercises of chapter 15 (agentic RL: multi-turn trajectories, tool tokens, turn-level credit)."""

from __future__ import annotations

import torch

from ..exact.agentic import episode_logprobs
from ..reward.turns import gigpo_advantage, turn_returns, turns_to_tokens
from ..worlds.agentic import LookupWorld, MarkovMLPPolicy
from . import Wrong, atol_for, exercise, expect, expect_close, expect_shape


def _world():
    world = LookupWorld(obs_len=2, noise=0.1, invalid_penalty=0.1)
    policy = MarkovMLPPolicy(world.space, hidden=4)
    theta = policy.init(torch.Generator().manual_seed(15), scale=0.8)
    return world, policy, theta


@exercise("15.1", "log p_θ(τ) of a multi-turn trajectory")
def check_trajectory_logprob(fn):
    """``fn(token_logp, policy_mask, env_logp)``: the model's log-probability of every token
    of N trajectories (N, T), observation tokens included (padding holds −inf), the
    policy-token mask (N, T) and the environment's log-factors (N,). Return log p_θ(τ),
    shape (N,): the environment's factors plus the log-probabilities of the tokens the
    policy sampled."""
    world, policy, theta = _world()
    ep = world.enumerate()
    lp = policy.token_logprobs(theta, ep.x, ep.tokens)
    live = (ep.policy_mask + ep.obs_mask) > 0
    lp = torch.where(live, lp, torch.full_like(lp, -torch.inf))
    got = expect_shape(fn(lp.clone(), ep.policy_mask.clone(), ep.env_logp.clone()), (len(ep),),
                       "log p_θ(τ)")
    g = got.detach().to(torch.float64)
    expect(bool(torch.isfinite(g).all()),
           "NaN or −inf: the padding holds −inf, and −inf × 0 is NaN; select the policy's tokens "
           "with torch.where(policy_mask > 0, token_logp, 0) instead of multiplying")
    want = episode_logprobs(policy, theta, ep)
    pm, om = ep.policy_mask > 0, ep.obs_mask > 0
    zero = torch.zeros_like(lp)
    with_obs = ep.env_logp + torch.where(pm | om, lp, zero).sum(-1)
    if torch.allclose(g, with_obs, atol=1e-10):
        raise Wrong("you added the model's log-probabilities of the tool's tokens: the tool wrote "
                    "them, so they are not factors of p_θ(τ) (use the policy-token mask only)")
    if torch.allclose(g, want - ep.env_logp, atol=1e-10):
        raise Wrong("the environment's factors are missing: Σ_τ exp(your log p) is "
                    f"{float((g.exp()).sum()):.3f}, not 1 (add env_logp)")
    expect_close(got, want, "log p_θ(τ)", atol=1e-10)
    expect(abs(float(g.exp().sum()) - 1) < atol_for(got, 1e-10), "Σ_τ p_θ(τ) must be 1")
    return (f"env_logp + Σ_t m_t log π_θ(y_t|h_t) on all {len(ep)} trajectories; they sum to "
            f"probability 1")


@exercise("15.2", "Turn-level returns on the policy's tokens")
def check_turn_weights(fn):
    """``fn(turn_rewards, turn_ids, policy_mask, gamma)``: per-turn rewards (N, K), the turn
    of every token (N, T) (−1 on padding), the policy-token mask (N, T) and a discount γ.
    Return the weight of every token, (N, T): the return from its turn on,
    G_k = Σ_{k'≥k} γ^{k'−k} r_{k'}, on the policy's tokens, and 0 on the tool's tokens and
    the padding."""
    world, _, _ = _world()
    ep = world.enumerate()
    idx = torch.arange(0, len(ep), max(1, len(ep) // 40))
    sub = ep.index(idx)
    tr = sub.turn_rewards + 0.3 * (sub.outcomes >= 0).to(torch.float64)   # a reward in every turn
    mask = (sub.outcomes >= 0)
    for gamma in (1.0, 0.8):
        got = expect_shape(fn(tr.clone(), sub.turn_ids.clone(), sub.policy_mask.clone(), gamma),
                           tuple(sub.tokens.shape), "weights")
        g = got.detach().to(torch.float64)
        want = turns_to_tokens(turn_returns(tr, gamma, mask), sub.turn_ids, sub.policy_mask)
        total = turns_to_tokens(tr.sum(1, keepdim=True).expand_as(tr), sub.turn_ids,
                                sub.policy_mask)
        if torch.allclose(g, total, atol=1e-10):
            raise Wrong("every token got the episode's total reward (outcome credit): a turn's "
                        "action cannot change the rewards paid before it, so its weight is the "
                        "return from its turn on")
        past = turns_to_tokens(torch.cumsum(tr, 1), sub.turn_ids, sub.policy_mask)
        if gamma == 1.0 and torch.allclose(g, past, atol=1e-10):
            raise Wrong("you summed the rewards up to turn k; the return sums those from turn k "
                        "on (flip, cumsum, flip)")
        on_tool = g[(sub.obs_mask > 0)]
        expect(bool((on_tool == 0).all()),
               "the tool's tokens must get weight 0: they are not in the loss")
        expect_close(got, want, f"weights (γ = {gamma})", atol=1e-10,
                     hint="G_k = r_k + γ G_{k+1}, copied to the policy tokens of turn k")
    return "G_k on each policy token of turn k, 0 on tool tokens and padding, for γ = 1 and 0.8"


def _gigpo_inputs():
    """Two tasks × 4 episodes × 3 turns, with anchors that repeat across steps and tasks."""
    rewards = torch.tensor([[-0.1, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [-0.1, -0.1, 0.0],
                            [0.0, 1.0, 0.0], [-0.1, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]],
                           dtype=torch.float64)
    taken = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 1],
                          [1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    anchors = torch.tensor([[0, 3, 2], [0, 2, 0], [0, 2, 3], [0, 3, 3],
                            [0, 2, 0], [0, 3, 2], [0, 2, 3], [0, 0, 0]])
    groups = torch.arange(2).repeat_interleave(4)
    return rewards, taken, anchors, groups


@exercise("15.3", "GiGPO's step advantage (anchor-state groups)")
def check_step_advantage(fn):
    """``fn(returns, anchors, groups, turn_mask)``: the return from each turn G (N, K), the
    id of the observation each turn starts from (N, K), the task (group) of each episode
    (N,) and which turns were taken (N, K) bool. Return GiGPO's step advantage (its
    ``mean_norm`` mode), (N, K): G minus the mean of G over its step group, the taken turns
    of the same task that start from the same observation (at any step); 0 on turns not
    taken (a step group of one gets 0)."""
    rewards, taken, anchors, groups = _gigpo_inputs()
    G = turn_returns(rewards, 1.0, taken)
    got = expect_shape(fn(G.clone(), anchors.clone(), groups.clone(), taken.clone()),
                       tuple(G.shape), "A^S")
    g = got.detach().to(torch.float64)
    full = gigpo_advantage(rewards, 4, turn_mask=taken, anchors=anchors, gamma=1.0,
                           std_normalise=False)
    episode = gigpo_advantage(rewards, 4, turn_mask=taken, anchors=anchors, gamma=1.0,
                              std_normalise=False, step_weight=0.0)
    want = full - episode
    expect(bool((g[~taken] == 0).all()), "turns an episode did not take must get 0")

    def by_key(key):
        k = key[taken]
        _, inv = torch.unique(k, dim=0, return_inverse=True)
        n = int(inv.max()) + 1
        s = torch.zeros(n, dtype=G.dtype).index_add(0, inv, G[taken])
        c = torch.zeros(n, dtype=G.dtype).index_add(0, inv, torch.ones_like(G[taken]))
        out = torch.zeros_like(G)
        out[taken] = G[taken] - (s / c)[inv]
        return out

    if torch.allclose(g, by_key(anchors[..., None]), atol=1e-10):
        raise Wrong("you pooled turns of different tasks: a step group holds the turns of one task "
                    "(one group of episodes) that start from the same observation")
    if torch.allclose(g, by_key(torch.stack([groups[:, None].expand_as(anchors),
                                             torch.arange(3).expand_as(anchors)], -1)), atol=1e-10):
        raise Wrong("you grouped turns by their index k; GiGPO groups the turns that start from the "
                    "same observation, whatever the step")
    expect_close(got, want, "A^S", atol=1e-10,
                 hint="mean over the taken turns with the same (task, anchor) pair")
    return "G − mean over the turns of the same task that start from the same observation"
