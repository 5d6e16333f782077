"""Exact analysis on the enumerable multi-turn world (:class:`pgbook.worlds.agentic.LookupWorld`).

Every trajectory of the world is listed, with its θ-free log-factor (the task draw and the
environment's transitions, :attr:`~pgbook.worlds.agentic.Episodes.env_logp`), so

    p_θ(τ) = exp( env_logp(τ) + Σ_t m_t log π_θ(y_t | h_t) ),     m = the policy-token mask,
    J(θ) = Σ_τ p_θ(τ) R(τ),

are finite, differentiable sums, and so is the expected gradient of any token-level estimator

    ĝ(τ) = Σ_t c_t w_t ∇log π_θ(y_t | h_t)

for any per-token weights w (outcome, turn-level returns, baselines) and any loss mask c
(the policy-token mask, or one that also lets the observation tokens in). The first is the
trajectory side (which tokens' log-probs enter), the second the reward side.

Shapes: N trajectories, T positions, K turns, θ (P,). Functions run on the device of θ (the
world's tensors are moved there) and in its dtype (float32 for a low-precision θ).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_finite,
    check_finite_where,
    check_index,
    check_mask,
    check_option,
    check_positive,
    check_same_device,
    check_shape,
    check_tensor,
    work_dtype,
)
from ..worlds.agentic import Episodes, LookupWorld
from ..worlds.seqlm import SeqPolicy

__all__ = [
    "CORRECTIONS",
    "CREDITS",
    "MASKS",
    "answer_information",
    "credit_weights",
    "emission_probability",
    "episode_logprobs",
    "episode_probs",
    "estimator_moments",
    "exact_J",
    "exact_gradient",
    "expected_gradient",
    "expected_update",
    "per_episode_gradients",
    "per_turn_scores",
    "reply_probability",
    "sampled_estimates",
    "stale_expected_gradient",
    "state_values",
    "turn_returns_exact",
]


def _check(policy: SeqPolicy, theta: Tensor, ep: Episodes | None = None, *,
           values: bool = False) -> None:
    """A policy, its θ (P,) (finite) and, when given, episodes that fit the policy's space.
    ``values``: the function reads values (groups of tasks, sampling): refused on meta."""
    if not isinstance(policy, SeqPolicy):
        raise ValueError(f"policy: expected a SeqPolicy (e.g. a MarkovMLPPolicy on the world's "
                         f"space), got {type(policy).__name__}")
    check_tensor(theta, "theta", ndim=1, floating=True)
    if theta.shape[0] != policy.n_params:
        raise ValueError(f"theta: expected shape ({policy.n_params},) for {type(policy).__name__}, "
                         f"got {tuple(theta.shape)}")
    check_finite(theta, "theta")
    if values and _is_meta(theta):
        raise ValueError("theta: this function reads values (the tasks' groups); the meta device "
                         "has none")
    if ep is None:
        return
    if not isinstance(ep, Episodes):
        raise ValueError(f"ep: expected pgbook.worlds.agentic.Episodes (LookupWorld.enumerate()), "
                         f"got {type(ep).__name__}")
    T = policy.space.T
    if ep.tokens.dim() != 2 or ep.tokens.shape[1] != T:
        raise ValueError(f"ep: expected episodes of T = {T} tokens (the policy's space), got "
                         f"tokens of shape {tuple(ep.tokens.shape)}")
    check_index(ep.tokens, "ep.tokens", policy.space.V)
    check_index(ep.x, "ep.x", policy.space.X)


def _loss_mask(mask: Tensor | None, e: Episodes, theta: Tensor) -> Tensor:
    """The loss mask c (N, T) in θ's dtype: the policy-token mask by default, else ``mask``
    (0/1, not all zero, on θ's device)."""
    if mask is None:
        return e.policy_mask
    check_mask(mask, "mask", tuple(e.tokens.shape))
    check_same_device(theta=theta, mask=mask)
    return mask.to(work_dtype(theta.dtype))


def _weights(weights: Tensor, m: Tensor, e: Episodes, theta: Tensor) -> Tensor:
    """Per-token weights (N, T), floating, finite where the mask is 1, on θ's device."""
    check_shape(weights, "weights", tuple(e.tokens.shape))
    check_tensor(weights, "weights", floating=True)
    check_same_device(theta=theta, weights=weights)
    check_finite_where(weights, m, "weights")
    return weights.detach().to(work_dtype(theta.dtype))


def _rewards(rewards: Tensor, ep: Episodes, theta: Tensor) -> Tensor:
    """R (N,) given per trajectory: floating, finite, on θ's device; in θ's dtype."""
    check_tensor(rewards, "rewards", ndim=1, floating=True)
    if rewards.shape[0] != len(ep):
        raise ValueError(f"rewards: expected shape ({len(ep)},) (one per trajectory), got "
                         f"{tuple(rewards.shape)}")
    check_same_device(theta=theta, rewards=rewards)
    check_finite(rewards, "rewards")
    return rewards.to(work_dtype(theta.dtype))


def _on(ep: Episodes, theta: Tensor) -> Episodes:
    """The episodes' tensors on θ's device, floating fields in θ's working dtype (float32 for
    low-precision θ, where the policies' log-probabilities are computed)."""
    out = {}
    for f in ep.__dataclass_fields__:
        v = getattr(ep, f)
        out[f] = v.to(device=theta.device, dtype=work_dtype(theta.dtype)) if v.is_floating_point() \
            else v.to(theta.device)
    return Episodes(**out)


def episode_logprobs(policy: SeqPolicy, theta: Tensor, ep: Episodes, mask: Tensor | None = None) -> Tensor:
    """log p_θ(τ) = env_logp(τ) + Σ_t m_t log π_θ(y_t|h_t), (N,); differentiable.

    ``mask`` (N, T) defaults to the policy-token mask (the exact trajectory probability);
    any other mask gives the log of a *different* product (e.g. one that also scores the
    observation tokens as if the policy had written them, which is not a probability of τ).
    """
    _check(policy, theta, ep)
    ep = _on(ep, theta)
    m = _loss_mask(mask, ep, theta)
    lp = policy.token_logprobs(theta, ep.x, ep.tokens)
    return ep.env_logp + torch.where(m > 0, lp, torch.zeros_like(lp)).sum(-1)


def episode_probs(policy: SeqPolicy, theta: Tensor, ep: Episodes) -> Tensor:
    """p_θ(τ) for every trajectory, (N,): sums to 1 for any θ."""
    return episode_logprobs(policy, theta, ep).exp()


def exact_J(policy: SeqPolicy, theta: Tensor, ep: Episodes, rewards: Tensor | None = None) -> Tensor:
    """J(θ) = Σ_τ p_θ(τ) R(τ) (R = Σ_k r_k by default, or ``rewards`` (N,)); differentiable."""
    _check(policy, theta, ep)
    R = _on(ep, theta).rewards if rewards is None else _rewards(rewards, ep, theta)
    return episode_probs(policy, theta, ep) @ R


def exact_gradient(policy: SeqPolicy, theta: Tensor, ep: Episodes, rewards: Tensor | None = None) -> Tensor:
    """∇J(θ), (P,), by autograd through the enumerated sum (only the π_θ factors depend on θ)."""
    _check(policy, theta, ep)                    # the checks, before entering the transform
    if rewards is not None:
        _rewards(rewards, ep, theta)
    return torch.func.grad(lambda t: exact_J(policy, t, ep, rewards))(theta.detach())


def emission_probability(policy: SeqPolicy, theta: Tensor, ep: Episodes,
                         token_ids: Iterable[int]) -> Tensor:
    """P_θ(the policy itself emits one of ``token_ids`` in some turn), a 0-dim tensor.

    With the environment's tokens as ``token_ids`` (e.g. :attr:`LookupWorld.env_ids`) this is
    the probability that the policy writes tool output instead of acting: a hallucinated
    observation. ``token_ids``: a non-empty sequence of token ids in [0, V). Differentiable."""
    _check(policy, theta, ep)
    V = policy.space.V
    if isinstance(token_ids, (str, bytes)) or not isinstance(token_ids, Iterable):
        raise ValueError(f"token_ids: expected a sequence of token ids, got {token_ids!r}")
    ids_list = token_ids.tolist() if isinstance(token_ids, Tensor) else list(token_ids)
    if not ids_list or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < V
                               for i in ids_list):
        raise ValueError(f"token_ids: expected one or more token ids in [0, {V}), got "
                         f"{ids_list!r}")
    e = _on(ep, theta)
    ids = torch.tensor(ids_list, device=e.tokens.device)
    hit = (torch.isin(e.tokens, ids) & (e.policy_mask > 0)).any(-1)
    return episode_probs(policy, theta, ep) @ hit.to(work_dtype(theta.dtype))


def state_values(policy: SeqPolicy, theta: Tensor, ep: Episodes) -> tuple[Tensor, Tensor]:
    """Exact baselines: V(x, s) per trajectory (N,) and the anchor-state value per turn (N, K).

    V(x, s) = E[R | x, s] (the group mean of GRPO with infinitely many samples);
    V_anchor(τ, k) = E[G_{k'} | x, s, anchor_{k'} = anchor_k(τ)], the mean return-to-go over
    every turn, at any step, that starts from the same observation in the same task (GiGPO's
    step group with infinitely many samples; G_k = Σ_{k'≥k} r_{k'}). 0 for turns not taken.
    Not on the meta device (the tasks' groups are read from values)."""
    _check(policy, theta, ep, values=True)
    e = _on(ep, theta)
    with torch.no_grad():
        p = episode_probs(policy, theta, ep)
    gid = e.groups
    n_g = int(gid.max()) + 1
    pg = torch.zeros(n_g, dtype=p.dtype, device=p.device).index_add_(0, gid, p)
    rg = torch.zeros_like(pg).index_add_(0, gid, p * e.rewards)
    V = (rg / pg.clamp_min(torch.finfo(p.dtype).tiny))[gid]
    G = turn_returns_exact(e.turn_rewards)
    taken = e.anchors >= 0
    n_a = int(e.anchors.max()) + 1
    key = gid[:, None] * n_a + e.anchors.clamp_min(0)                          # (N, K)
    w = (p[:, None] * taken.to(p.dtype))
    den = torch.zeros(n_g * n_a, dtype=p.dtype, device=p.device).index_add_(0, key.reshape(-1),
                                                                              w.reshape(-1))
    num = torch.zeros_like(den).index_add_(0, key.reshape(-1), (w * G).reshape(-1))
    Va = torch.where(taken, (num / den.clamp_min(torch.finfo(p.dtype).tiny))[key], torch.zeros_like(G))
    return V, Va


def turn_returns_exact(turn_rewards: Tensor, gamma: float = 1.0) -> Tensor:
    """G_k = Σ_{k'≥k} γ^{k'−k} r_{k'}, (*N, K) (``turn_rewards`` floating, finite; γ ∈ [0, 1])."""
    check_tensor(turn_rewards, "turn_rewards", floating=True)
    if turn_rewards.dim() < 1 or turn_rewards.shape[-1] == 0:
        raise ValueError(f"turn_rewards: expected shape (*N, K) with K ≥ 1 turns, got "
                         f"{tuple(turn_rewards.shape)}")
    check_finite(turn_rewards, "turn_rewards")
    gamma = check_positive(gamma, "gamma", allow_zero=True)
    if gamma > 1:
        raise ValueError(f"gamma: expected a discount in [0, 1], got {gamma}")
    K = turn_rewards.shape[-1]
    out = torch.zeros_like(turn_rewards)
    run = torch.zeros_like(turn_rewards[..., 0])
    for k in range(K - 1, -1, -1):
        run = turn_rewards[..., k] + gamma * run
        out[..., k] = run
    return out


#: the per-token weightings of :func:`credit_weights`
CREDITS = ("outcome", "turn", "anchor")


def credit_weights(policy: SeqPolicy, theta: Tensor, ep: Episodes, credit: str = "outcome") -> Tensor:
    """Per-token weights w (N, T) with exact baselines, for :func:`expected_gradient`:

    * ``"outcome"``: w_t = R(τ) − V(x, s) on every token (the trajectory-level advantage);
    * ``"turn"``: w_t = G_{k(t)} − V(x, s), the return from the token's turn on;
    * ``"anchor"``: w_t = G_{k(t)} − V_anchor(τ, k(t)) (the step-level advantage of GiGPO,
      with exact means).

    All three are unbiased for ∇J with the policy-token mask (the baselines do not depend on
    the action they multiply; a turn's action cannot change rewards paid before it).
    """
    check_option(credit, "credit", CREDITS)
    _check(policy, theta, ep, values=True)
    e = _on(ep, theta)
    V, Va = state_values(policy, theta, ep)
    k = e.turn_ids.clamp_min(0)
    if credit == "outcome":
        w = (e.rewards - V)[:, None].expand_as(e.policy_mask)
    else:
        G = turn_returns_exact(e.turn_rewards)
        base = V[:, None] if credit == "turn" else Va
        w = torch.gather(G - base, 1, k)
    return torch.where(e.turn_ids >= 0, w, torch.zeros_like(w))


def expected_gradient(policy: SeqPolicy, theta: Tensor, ep: Episodes, weights: Tensor,
                      mask: Tensor | None = None) -> Tensor:
    """E_{τ~p_θ}[ Σ_t c_t w_t ∇log π_θ(y_t|h_t) ] exactly, (P,).

    ``weights`` (N, T) (held fixed), ``mask`` c (N, T) defaults to the policy-token mask;
    pass ``policy_mask + obs_mask`` to score the observation tokens as if the policy had
    written them. One backward pass through Σ_τ sg[p_θ(τ)] Σ_t c_t w_t log π_θ(y_t|h_t)."""
    _check(policy, theta, ep)
    e = _on(ep, theta)
    m = _loss_mask(mask, e, theta)
    w = _weights(weights, m, e, theta)
    with torch.no_grad():
        q = episode_probs(policy, theta, ep)

    def f(t):
        lp = policy.token_logprobs(t, e.x, e.tokens)
        return q @ torch.where(m > 0, w * lp, torch.zeros_like(lp)).sum(-1)

    return torch.func.grad(f)(theta.detach())


def per_episode_gradients(policy: SeqPolicy, theta: Tensor, ep: Episodes, weights: Tensor,
                          mask: Tensor | None = None) -> Tensor:
    """g(τ) = Σ_t c_t w_t ∇log π_θ(y_t|h_t) for every trajectory, (N, P) (``vmap(grad)``)."""
    _check(policy, theta, ep)
    e = _on(ep, theta)
    m = _loss_mask(mask, e, theta)
    w = _weights(weights, m, e, theta)

    def one(t, x, tok, mk, w):
        lp = policy.token_logprobs(t, x, tok)
        return torch.where(mk > 0, w * lp, torch.zeros_like(lp)).sum()

    return torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0, 0, 0))(
        theta.detach(), e.x, e.tokens, m, w)


def estimator_moments(policy: SeqPolicy, theta: Tensor, ep: Episodes, weights: Tensor,
                      mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact mean (P,) and total variance tr Cov (0-dim) of the one-trajectory estimator
    g(τ) = Σ_t c_t w_t ∇log π_θ(y_t|h_t) under τ ~ p_θ (a B-trajectory mean has tr Cov / B)."""
    g = per_episode_gradients(policy, theta, ep, weights, mask)
    with torch.no_grad():
        q = episode_probs(policy, theta, ep).to(g.dtype)
    mean = q @ g
    return mean, q @ g.pow(2).sum(-1) - mean.pow(2).sum()


# -- fused exact updates, for training on the tree --------------------------------------------
#: the loss masks of :func:`expected_update`
MASKS = ("policy", "all")


def _weights_from(e: Episodes, q: Tensor, credit: str) -> Tensor:
    """The per-token weights of :func:`credit_weights` from given trajectory probabilities."""
    gid = e.groups
    n_g = int(gid.max()) + 1
    pg = torch.zeros(n_g, dtype=q.dtype, device=q.device).index_add(0, gid, q)
    tiny = torch.finfo(q.dtype).tiny
    V = (torch.zeros_like(pg).index_add(0, gid, q * e.rewards) / pg.clamp_min(tiny))[gid]
    k = e.turn_ids.clamp_min(0)
    if credit == "outcome":
        w = (e.rewards - V)[:, None].expand_as(e.policy_mask)
    else:
        G = turn_returns_exact(e.turn_rewards)
        if credit == "turn":
            base = V[:, None]
        else:
            taken = e.anchors >= 0
            n_a = int(e.anchors.max()) + 1
            key = gid[:, None] * n_a + e.anchors.clamp_min(0)
            wt = q[:, None] * taken.to(q.dtype)
            den = torch.zeros(n_g * n_a, dtype=q.dtype, device=q.device).index_add(
                0, key.reshape(-1), wt.reshape(-1))
            num = torch.zeros_like(den).index_add(0, key.reshape(-1), (wt * G).reshape(-1))
            base = torch.where(taken, (num / den.clamp_min(tiny))[key], torch.zeros_like(G))
        w = torch.gather(G - base, 1, k)
    return torch.where(e.turn_ids >= 0, w, torch.zeros_like(w))


def expected_update(policy: SeqPolicy, theta: Tensor, ep: Episodes, credit: str = "outcome",
                    mask: str = "policy") -> tuple[Tensor, Tensor]:
    """(E[ĝ], J(θ)) in one forward and one backward pass: the exact expected gradient of the
    token-level estimator with :func:`credit_weights` ``credit`` and the loss mask ``mask``
    (``"policy"``: the policy's tokens; ``"all"``: the observation tokens too, as if the
    policy had written them), and J(θ). With ``mask="policy"`` E[ĝ] = ∇J exactly."""
    check_option(credit, "credit", CREDITS)
    check_option(mask, "mask", MASKS)
    _check(policy, theta, ep, values=True)
    e = _on(ep, theta)
    t = theta.detach().requires_grad_()
    with torch.enable_grad():
        lp = policy.token_logprobs(t, e.x, e.tokens)
        pm = e.policy_mask > 0
        with torch.no_grad():
            q = (e.env_logp + torch.where(pm, lp, torch.zeros_like(lp)).sum(-1)).exp()
            w = _weights_from(e, q, credit)
        m = pm if mask == "policy" else pm | (e.obs_mask > 0)
        obj = q @ torch.where(m, w * lp, torch.zeros_like(lp)).sum(-1)
        (g,) = torch.autograd.grad(obj, t)
    return g, q @ e.rewards


def reply_probability(policy: SeqPolicy, theta: Tensor, world: LookupWorld) -> Tensor:
    """P(the policy writes a tool reply itself): the probability that, right after calling
    the tool on its first turn, the policy's own continuation is a well-formed reply
    (O − 1 ``:`` then a value, any of the S), averaged over contexts ρ(x). 0-dim,
    differentiable.

    The environment always writes these tokens in a rollout, so this is what the policy
    would write in the environment's place: 0 for a policy trained only on its own tokens
    (it never learned to), up to 1 for one trained on the tool's output as its own text."""
    if not isinstance(world, LookupWorld):
        raise ValueError(f"world: expected a pgbook.worlds.agentic.LookupWorld, got "
                         f"{type(world).__name__}")
    _check(policy, theta)
    if (policy.space.X, policy.space.V, policy.space.T) != (world.X, world.V, world.T):
        raise ValueError(f"world: expected the world of the policy's space (X, V, T) = "
                         f"{(policy.space.X, policy.space.V, policy.space.T)}, got "
                         f"{(world.X, world.V, world.T)}")
    X, S, n_obs, T = world.X, world.S, world.O, world.T
    dev = theta.device
    tok = torch.full((X, S, T), world.ERR, dtype=torch.long, device=dev)
    tok[..., 0] = world.CALL
    if n_obs > 1:
        tok[..., 1:n_obs] = world.SEP
    tok[..., n_obs] = torch.tensor(world.reply_ids, device=dev)[None, :]
    x = torch.arange(X, device=dev)[:, None].expand(X, S)
    lp = policy.token_logprobs(theta, x, tok)[..., 1:n_obs + 1].sum(-1)         # (X, S)
    return world.rho.to(device=dev, dtype=lp.dtype) @ lp.exp().sum(-1)


def per_turn_scores(policy: SeqPolicy, theta: Tensor, ep: Episodes, mask: Tensor | None = None) -> Tensor:
    """S_{τ,k} = Σ_{t in turn k} c_t ∇log π_θ(y_t|h_t) for every trajectory and turn,
    (N, K, P) (``vmap`` of a Jacobian; ``mask`` c defaults to the policy-token mask).

    Any estimator whose weights are constant within a turn is then a weighted sum,
    ĝ = (1/B) Σ_i Σ_k Â_{i,k} S_{τ_i,k}: Monte-Carlo estimates of thousands of sampled
    batches cost one matrix product (:func:`sampled_estimates`)."""
    _check(policy, theta, ep)
    e = _on(ep, theta)
    m = _loss_mask(mask, e, theta)
    K = e.turn_rewards.shape[1]
    onehot = torch.nn.functional.one_hot(e.turn_ids.clamp_min(0), K).to(work_dtype(theta.dtype))
    onehot = onehot * ((e.turn_ids >= 0) & (m > 0)).to(work_dtype(theta.dtype))[..., None]   # (N, T, K)

    def one(t, x, tok, oh):
        lp = policy.token_logprobs(t, x, tok)
        return lp @ oh                                                        # (K,)

    jac = torch.func.vmap(torch.func.jacrev(one), in_dims=(None, 0, 0, 0))(
        theta.detach(), e.x, e.tokens, onehot)
    return jac


def sampled_estimates(scores: Tensor, idx: Tensor, turn_advantages: Tensor) -> Tensor:
    """ĝ_m = (1/B) Σ_i Σ_k Â_{m,i,k} S_{idx[m,i],k} for M sampled batches, (M, P).

    ``scores`` (N, K, P) from :func:`per_turn_scores`; ``idx`` (M, B) trajectory indices;
    ``turn_advantages`` (M, B, K) (0 on turns not taken). The per-episode token sum,
    averaged over the batch (REINFORCE's aggregation). The coefficients of each batch are
    summed per (trajectory, turn) first, so the cost is one (M, N·K) × (N·K, P) product."""
    check_tensor(scores, "scores", ndim=3, floating=True)
    check_finite(scores, "scores")
    N, K, P = scores.shape
    check_tensor(idx, "idx", ndim=2)
    check_index(idx, "idx", N)
    M, B = idx.shape
    check_shape(turn_advantages, "turn_advantages", (M, B, K))
    check_tensor(turn_advantages, "turn_advantages", floating=True)
    check_finite(turn_advantages, "turn_advantages")
    check_same_device(scores=scores, idx=idx, turn_advantages=turn_advantages)
    col = (idx[..., None] * K + torch.arange(K, device=idx.device)).reshape(M, -1)
    C = torch.zeros(M, N * K, dtype=scores.dtype, device=scores.device).scatter_add_(
        1, col, turn_advantages.reshape(M, -1).to(scores.dtype))
    return C @ scores.reshape(N * K, P) / B


def answer_information(policy: SeqPolicy, theta: Tensor, ep: Episodes) -> Tensor:
    """I(s; answer) in nats: the mutual information, under p_θ, between the hidden value s
    and the episode's final answer token (no answer counts as one more outcome). 0 for a
    policy whose answers ignore the task (a template); log S for one that always answers s.
    0-dim. Not on the meta device."""
    _check(policy, theta, ep, values=True)
    e = _on(ep, theta)
    with torch.no_grad():
        q = episode_probs(policy, theta, ep)
    K = e.turn_rewards.shape[1]
    act = e.tokens[:, torch.arange(K, device=e.tokens.device) * (e.tokens.shape[1] // K)]
    last = act.gather(1, (e.n_turns - 1).clamp_min(0)[:, None]).squeeze(1)
    answered = e.outcomes.gather(1, (e.n_turns - 1).clamp_min(0)[:, None]).squeeze(1) <= 1
    a = torch.where(answered, last, torch.full_like(last, -1)) + 1
    S, A = int(e.s.max()) + 1, int(a.max()) + 1
    joint = torch.zeros(S * A, dtype=q.dtype, device=q.device).index_add(0, e.s * A + a, q).view(S, A)
    ps, pa = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    tiny = torch.finfo(q.dtype).tiny
    terms = joint * (joint.clamp_min(tiny).log() - (ps * pa).clamp_min(tiny).log())
    return torch.where(joint > 0, terms, torch.zeros_like(terms)).sum()


#: the corrections of :func:`stale_expected_gradient`
CORRECTIONS = ("none", "trajectory", "with_observations")


def stale_expected_gradient(policy: SeqPolicy, theta: Tensor, behaviour: Tensor, ep: Episodes,
                            correction: str = "trajectory") -> Tensor:
    """The exact expected gradient, at θ, of the estimator fed **stale** trajectories, (P,).

    ``behaviour`` is the θ that sampled them: (P,) for one stale policy, or (K, P) for one
    per turn (a slow, asynchronous environment: turn k of an episode was sampled by the
    policy of that moment). Trajectories are drawn from p_b(τ) = env · Π_k π_{b_k}(a_k|h_k);
    each gets A(τ) = R(τ) − V_b(x, s) (the group mean under the sampling policy) and

    * ``"none"``: ĝ = A Σ_t m_t ∇log π_θ(y_t|h_t), as if on-policy (biased);
    * ``"trajectory"``: ĝ = w A Σ_t m_t ∇log π_θ, w = exp Σ_t m_t [log π_θ − log π_{b(t)}]
      over the **policy's** tokens, each against the policy that sampled it (the environment's
      factors cancel): E[ĝ] = ∇J(θ) exactly;
    * ``"with_observations"``: the same with the observation tokens' π_θ(o)/π_b(o) also in w
      (as a trainer that scores every token would compute it): biased.
    """
    check_option(correction, "correction", CORRECTIONS)
    _check(policy, theta, ep, values=True)
    check_tensor(behaviour, "behaviour", floating=True)
    check_same_device(theta=theta, behaviour=behaviour)
    check_finite(behaviour, "behaviour")
    e = _on(ep, theta)
    K = e.turn_rewards.shape[1]
    b = behaviour.detach().to(dtype=theta.dtype)
    if b.dim() == 1:
        b = b.expand(K, -1)
    if tuple(b.shape) != (K, theta.shape[0]):
        raise ValueError(f"behaviour: expected shape ({theta.shape[0]},) or ({K}, "
                         f"{theta.shape[0]}) (one θ per turn), got {tuple(behaviour.shape)}")
    with torch.no_grad():
        lp_b_all = torch.stack([policy.token_logprobs(b[k], e.x, e.tokens) for k in range(K)])
        turn = e.turn_ids.clamp_min(0)
        lp_b = torch.gather(lp_b_all, 0, turn[None]).squeeze(0)              # π_{b(t)}(y_t)
        lp_t = policy.token_logprobs(theta.detach(), e.x, e.tokens)
        pm, om = e.policy_mask > 0, e.obs_mask > 0
        zero = torch.zeros_like(lp_b)
        q_b = (e.env_logp + torch.where(pm, lp_b, zero).sum(-1)).exp()
        gid = e.groups
        n_g = int(gid.max()) + 1
        pg = torch.zeros(n_g, dtype=q_b.dtype, device=q_b.device).index_add(0, gid, q_b)
        V = (torch.zeros_like(pg).index_add(0, gid, q_b * e.rewards) /
             pg.clamp_min(torch.finfo(q_b.dtype).tiny))[gid]
        A = e.rewards - V
        if correction == "none":
            w = torch.ones_like(A)
        else:
            m = pm if correction == "trajectory" else pm | om
            w = torch.where(m, lp_t - lp_b, zero).sum(-1).exp()
        coef = q_b * w * A

    def f(t):
        lp = policy.token_logprobs(t, e.x, e.tokens)
        return coef @ torch.where(pm, lp, torch.zeros_like(lp)).sum(-1)

    return torch.func.grad(f)(theta.detach())
