"""Credit across turns: turn returns, turn-level advantages and anchor-state grouping.

A multi-turn episode i has per-turn rewards r_{i,1} … r_{i,K} (an outcome at the end, and
any turn-level rewards: a tool cost, an invalid-action penalty, a verified tool call) and
R_i = Σ_k r_{i,k}. GRPO broadcasts one advantage, from R_i, to every token of the episode.
A *turn-level* advantage gives each turn its own weight Â_{i,k}, copied to that turn's
policy tokens (:func:`turns_to_tokens`):

    turn_rtg   Â_{i,k} = G_{i,k} − mean_group(R),   G_{i,k} = Σ_{k'≥k} γ^{k'−k} r_{i,k'}
               (the return from turn k on: a turn cannot change rewards paid before it)
    mt_grpo    Â_{i,k} = z(R^O)_i + λ z(R^T)_i on the turns up to the first tool result,
               z(R^O)_i after it (Zeng et al. 2025, arXiv:2505.11821)
    gigpo      Â_{i,k} = A^E_i + ω A^S_{i,k}: an episode advantage plus a step advantage
               from the turns, in any episode of the group, that start from the same
               observation (the *anchor state*) (Feng et al. 2025, arXiv:2505.10978)

z(·) is the group z-score. Factor of J(θ): reward (every one of them changes the scalar
that weights ∇log π_θ of a turn's tokens, never π_θ).

Registered estimators (kind ``"advantage"``, form ``"turn"``) share the signature

    fn(turn_rewards (N, K), group_size, *, turn_mask (N, K), **options) -> (N, K)

with groups contiguous (rows k·G … k·G + G − 1 share a task) and ``turn_mask`` 1 on the
turns each episode took; options an estimator needs (``anchors`` (N, K), ``tool_turns``
(N, K), ``gamma``, ``std_eps`` …) are keywords, and :func:`compute_turn_advantages`
passes each estimator only those it takes. They compute in float32 for low-precision
rewards, return the rewards' dtype on their device, and give exactly 0 on turns not taken.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_finite,
    check_flag,
    check_mask,
    check_number,
    check_options,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    work_dtype,
)
from ..registry import components, register, resolve

__all__ = [
    "compute_turn_advantages",
    "gigpo_advantage",
    "mt_grpo_advantage",
    "turn_returns",
    "turn_rtg_advantage",
    "turns_to_tokens",
]


def _check_integer(x: Tensor, name: str) -> None:
    """``x`` must hold integers (ids): a bool, floating or complex tensor is refused."""
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer tensor, got dtype {x.dtype}")


def _check_turns(turn_rewards: Tensor, turn_mask: Tensor | None, group_size: int | None
                 ) -> tuple[Tensor, Tensor]:
    """Validate (N, K) turn rewards and their (N, K) 0/1 turn mask; returns them in the
    working dtype and as bool."""
    check_tensor(turn_rewards, "turn_rewards", ndim=2, floating=True)
    N, K = turn_rewards.shape
    if N == 0 or K == 0:
        raise ValueError(f"turn_rewards: expected at least one episode and one turn, got "
                         f"shape {tuple(turn_rewards.shape)}")
    check_finite(turn_rewards, "turn_rewards")
    if group_size is not None:
        check_positive_int(group_size, "group_size")
        if N % group_size:
            raise ValueError(f"group_size: expected a divisor of the number of episodes N = "
                             f"{N} (groups are contiguous), got G = {group_size}")
    if turn_mask is None:
        m = torch.ones_like(turn_rewards, dtype=torch.bool)
    else:
        check_mask(turn_mask, "turn_mask", (N, K))
        check_same_device(turn_rewards=turn_rewards, turn_mask=turn_mask)
        m = turn_mask.to(torch.bool)
    return turn_rewards.to(work_dtype(turn_rewards.dtype)), m


def turn_returns(turn_rewards: Tensor, gamma: float = 1.0, turn_mask: Tensor | None = None
                 ) -> Tensor:
    """G_{i,k} = Σ_{k'≥k} γ^{k'−k} m_{i,k'} r_{i,k'}, shape (N, K), zero where the turn
    mask is 0: the (discounted) return from turn k on.

    ``turn_rewards`` (N, K) floating; ``turn_mask`` (N, K) 0/1 (default: every turn).
    One matrix product with the (K, K) discount matrix, no loop. Factor of J(θ): reward.
    """
    r, m = _check_turns(turn_rewards, turn_mask, None)
    g = check_positive(gamma, "gamma", allow_zero=True)
    if g > 1:
        raise ValueError(f"gamma: expected a discount in [0, 1], got {gamma}")
    K = r.shape[1]
    k = torch.arange(K, device=r.device)
    gap = (k[:, None] - k[None, :]).to(r.dtype)                  # k' − k for row k', column k
    disc = torch.where(gap >= 0, torch.pow(torch.full_like(gap, g), gap.clamp_min(0)),
                       torch.zeros_like(gap))
    if g == 0:
        disc = torch.eye(K, dtype=r.dtype, device=r.device)
    rm = torch.where(m, r, torch.zeros_like(r))
    return torch.where(m, rm @ disc, torch.zeros_like(rm)).to(turn_rewards.dtype)


def turns_to_tokens(turn_values: Tensor, turn_ids: Tensor, mask: Tensor | None = None) -> Tensor:
    """w_{i,t} = turn_values[i, turn_ids[i, t]] on every token, 0 where ``turn_ids`` is −1
    or ``mask`` is 0: a turn's value copied to the tokens of that turn, shape (N, T).

    ``turn_values`` (N, K) floating; ``turn_ids`` (N, T) integer, the turn of each token
    (−1 on prompt and padding; :class:`pgbook.worlds.agentic.Rollout` and
    :class:`~pgbook.worlds.agentic.Episodes` carry them); ``mask`` (N, T) 0/1, e.g. the
    policy-token mask. Factor of J(θ): reward.
    """
    check_tensor(turn_values, "turn_values", ndim=2, floating=True)
    check_finite(turn_values, "turn_values")
    check_tensor(turn_ids, "turn_ids", ndim=2)
    _check_integer(turn_ids, "turn_ids")
    N, K = turn_values.shape
    if K == 0:
        raise ValueError(f"turn_values: expected at least one turn (K ≥ 1 in shape (N, K)), "
                         f"got shape {tuple(turn_values.shape)}")
    if turn_ids.shape[0] != N:
        raise ValueError(f"turn_ids: expected {N} rows (one per episode of turn_values), got "
                         f"shape {tuple(turn_ids.shape)}")
    check_same_device(turn_values=turn_values, turn_ids=turn_ids)
    # gather takes int32/int64 indices: other integer ids (int8, uint8, ...) are cast
    if turn_ids.dtype not in (torch.int32, torch.int64):
        turn_ids = turn_ids.to(torch.long)
    if not _is_meta(turn_ids) and turn_ids.numel() and \
            (int(turn_ids.min()) < -1 or int(turn_ids.max()) >= K):
        raise ValueError(f"turn_ids: expected turns in [-1, {K}) (−1: no turn), got range "
                         f"[{int(turn_ids.min())}, {int(turn_ids.max())}]")
    live = turn_ids >= 0
    if mask is not None:
        check_mask(mask, "mask", tuple(turn_ids.shape), allow_all_zero=True)
        check_same_device(turn_ids=turn_ids, mask=mask)
        live = live & mask.to(torch.bool)
    w = torch.gather(turn_values, 1, turn_ids.clamp_min(0))
    return torch.where(live, w, torch.zeros_like(w))


def _group_z(x: Tensor, G: int, std_eps: float, unbiased: bool = True, std: bool = True) -> Tensor:
    """(x − mean_G)/(std_G + ε) per contiguous group of G (÷ 1 without ``std``), (N,)."""
    g = x.view(-1, G)
    c = g - g.mean(1, keepdim=True)
    if not std:
        return c.reshape(-1)
    sd = g.std(1, unbiased=unbiased, keepdim=True) if G > 1 else torch.zeros_like(c[:, :1])
    return (c / (sd + std_eps)).reshape(-1)


@register("advantage", "turn_rtg", side="reward", form="turn",
          summary="Â_{i,k} = G_{i,k} − mean_G(R): the return from turn k, group-mean baseline",
          reference="Williams 1992 (reward-to-go); Shao et al. 2024 (group baseline)")
def turn_rtg_advantage(turn_rewards: Tensor, group_size: int, *, turn_mask: Tensor | None = None,
                       gamma: float = 1.0, std_eps: float = 1e-6, scale: bool = False) -> Tensor:
    """Â_{i,k} = (G_{i,k} − μ_G) / s, shape (N, K), 0 on turns not taken.

    G_{i,k} is the return from turn k (:func:`turn_returns`, discount ``gamma``); μ_G the
    mean of the group's episode returns R_j = Σ_k r_{j,k}; s = σ_G + ε with ``scale=True``
    (GRPO's std), else 1. With γ = 1 and one turn this is GRPO's (or Dr. GRPO's) advantage;
    with several turns each turn drops the rewards paid before it, which it cannot change.
    """
    r, m = _check_turns(turn_rewards, turn_mask, group_size)
    check_positive(std_eps, "std_eps", allow_zero=True)
    check_flag(scale, "scale")
    G = turn_returns(r, gamma, m)
    R = torch.where(m, r, torch.zeros_like(r)).sum(1).view(-1, group_size)
    mu = R.mean(1, keepdim=True).expand(-1, group_size).reshape(-1, 1)
    if scale:
        sd = R.std(1, keepdim=True) if group_size > 1 else torch.zeros_like(R[:, :1])
        s = (sd + std_eps).expand(-1, group_size).reshape(-1, 1)
    else:
        s = torch.ones_like(mu)
    adv = (G - mu) / s
    return torch.where(m, adv, torch.zeros_like(adv)).to(turn_rewards.dtype)


@register("advantage", "mt_grpo", side="reward", form="turn",
          summary="Â = z(R^O) + λ z(R^T) before the first tool result, z(R^O) after",
          reference="Zeng et al. 2025 (MT-GRPO, arXiv:2505.11821)")
def mt_grpo_advantage(turn_rewards: Tensor, group_size: int, *, turn_mask: Tensor | None = None,
                      tool_turns: Tensor | None = None, turn_coef: float = 1.0,
                      std_eps: float = 1e-4) -> Tensor:
    """MT-GRPO's turn-level advantage (the authors' "aae" estimator), shape (N, K).

    R^O_i is the outcome (the reward of the last turn episode i took: the last turn where
    ``turn_mask`` is 1), R^T_i the turn-level reward
    (the sum of its other turns' rewards, e.g. a verified tool call); z(·) the group
    z-score with the unbiased std and ε = ``std_eps`` (1e-4, as the authors'
    ``_compute_normalized_advantages``). An episode with a tool result (``tool_turns``
    (N, K) marks the turns whose observation is a tool result) gets
    z(R^O) + λ·z(R^T) on its turns up to and including the first such turn, and z(R^O) on
    the later ones; an episode without one gets z(R^T + R^O) on every turn. λ =
    ``turn_coef``. Equal to the authors' ``MTGRPOEnvTrainer._assign_advantages`` with
    ``advantage_est="aae"``, applied per turn instead of per token segment.
    """
    r, m = _check_turns(turn_rewards, turn_mask, group_size)
    check_positive(std_eps, "std_eps", allow_zero=True)
    turn_coef = check_number(turn_coef, "turn_coef")
    N, K = r.shape
    if tool_turns is None:
        tool = torch.zeros_like(m)
    else:
        check_mask(tool_turns, "tool_turns", (N, K), allow_all_zero=True)
        check_same_device(turn_rewards=turn_rewards, tool_turns=tool_turns)
        tool = tool_turns.to(torch.bool) & m
    rm = torch.where(m, r, torch.zeros_like(r))
    k = torch.arange(K, device=r.device)
    last = torch.where(m, k, -1).amax(1).clamp_min(0)              # the last turn taken
    R_O = rm.gather(1, last[:, None]).squeeze(1)
    R_T = rm.sum(1) - R_O
    zO = _group_z(R_O, group_size, std_eps)
    zT = _group_z(R_T, group_size, std_eps)
    zC = _group_z(R_T + R_O, group_size, std_eps)
    first = torch.where(tool, k, K).min(1).values                       # first tool-result turn
    has = first < K
    before = k[None, :] <= first[:, None]
    adv = torch.where(has[:, None], zO[:, None] + turn_coef * zT[:, None] * before.to(r.dtype),
                      zC[:, None].expand(N, K))
    return torch.where(m, adv, torch.zeros_like(adv)).to(turn_rewards.dtype)


def _cluster_stats(values: Tensor, cluster: Tensor, weights: Tensor, n_clusters: int,
                   unbiased: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Per-cluster weighted count, mean and std (÷ count − 1) of ``values`` (flat)."""
    cnt = torch.zeros(n_clusters, dtype=values.dtype, device=values.device).index_add(
        0, cluster, weights)
    s1 = torch.zeros_like(cnt).index_add(0, cluster, weights * values)
    mean = s1 / cnt.clamp_min(1)
    dev2 = torch.zeros_like(cnt).index_add(0, cluster, weights * (values - mean[cluster]) ** 2)
    var = dev2 / (cnt - 1 if unbiased else cnt).clamp_min(1)
    pos = var > 0                # √ at 0 has an infinite derivative: 0 there, by a double where
    sd = torch.where(pos, torch.where(pos, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var))
    return cnt, mean, sd


@register("advantage", "gigpo", side="reward", form="turn",
          summary="Â = A^E(episode) + ω A^S(turns from the same anchor state), GiGPO",
          reference="Feng et al. 2025 (GiGPO, arXiv:2505.10978)")
def gigpo_advantage(turn_rewards: Tensor, group_size: int, *, turn_mask: Tensor | None = None,
                    anchors: Tensor | None = None, gamma: float = 0.95, step_weight: float = 1.0,
                    std_normalise: bool = True, std_eps: float = 1e-6) -> Tensor:
    """GiGPO's advantage Â_{i,k} = A^E_i + ω A^S_{i,k}, shape (N, K), 0 on turns not taken.

    * Episode level: A^E_i = (R_i − m)/(s + ε), R_i = Σ_k r_{i,k}, with m and s the mean and
      (unbiased) std over the group's *turns* (each episode counted once per turn it took,
      verl-agent's ``compute_mean_std_cross_steps=True``); a group with one turn in all has
      m = 0, s = 1.
    * Step level (anchor-state grouping): the turns of one group that start from the same
      observation, ``anchors`` (N, K) integer ids, form a step group; G_{i,k} is the
      discounted return from turn k (:func:`turn_returns`, γ = ``gamma``) and
      A^S_{i,k} = (G_{i,k} − mean_step)/(std_step + ε) (a one-turn step group: 0).
    * ``std_normalise=False`` divides neither by a std (verl-agent's ``mode="mean_norm"``;
      the default is its ``"mean_std_norm"``). ω = ``step_weight``.

    Equal to verl-agent's ``compute_gigpo_outcome_advantage`` (episode_norm_reward,
    build_step_group with exact matching, step_norm_reward) on the same turns, with turns
    as rows instead of its one row per step. Anchors default to one anchor per turn index.
    Not on the meta device (the groups depend on the values).
    """
    r, m = _check_turns(turn_rewards, turn_mask, group_size)
    check_positive(std_eps, "std_eps", allow_zero=True)
    step_weight = check_number(step_weight, "step_weight")
    check_flag(std_normalise, "std_normalise")
    N, K = r.shape
    if anchors is None:
        anchors = torch.arange(K, device=r.device).expand(N, K)
    check_tensor(anchors, "anchors", ndim=2)
    _check_integer(anchors, "anchors")
    if anchors.shape != (N, K):
        raise ValueError(f"anchors: expected an integer tensor of shape {(N, K)}, got "
                         f"{tuple(anchors.shape)} ({anchors.dtype})")
    check_same_device(turn_rewards=turn_rewards, anchors=anchors)
    if _is_meta(turn_rewards):
        raise ValueError("turn_rewards: anchor-state grouping depends on the values (which turns "
                         "share an observation); the meta device has none")
    if not _is_meta(anchors) and bool((anchors[m] < 0).any()):
        raise ValueError(f"anchors: expected ids ≥ 0 on every turn taken (−1 marks a turn not "
                         f"taken), got {int((anchors[m] < 0).sum())} negative id(s) there")
    rm = torch.where(m, r, torch.zeros_like(r))
    R = rm.sum(1)
    grp = torch.arange(N // group_size, device=r.device).repeat_interleave(group_size)
    # episode level: mean/std over the group's turns (episode i weighted by its turns)
    n_i = m.sum(1).to(r.dtype)
    cnt, mean, sd = _cluster_stats(R, grp, n_i, N // group_size)
    single = cnt[grp] <= 1
    mE = torch.where(single, torch.zeros_like(R), mean[grp])
    sE = torch.where(single, torch.ones_like(R), sd[grp])
    AE = (R - mE) / (sE + std_eps) if std_normalise else R - mE
    # step level: clusters of (group, anchor) over the turns taken
    Gk = turn_returns(r, gamma, m)
    key = torch.stack([grp[:, None].expand(N, K), anchors.to(torch.long)], -1)[m]   # (n, 2)
    _, cluster = torch.unique(key, dim=0, return_inverse=True)
    n_cl = int(cluster.max()) + 1 if cluster.numel() else 0
    g_taken = Gk[m]
    c_cnt, c_mean, c_sd = _cluster_stats(g_taken, cluster, torch.ones_like(g_taken), n_cl)
    one = c_cnt[cluster] <= 1
    c_sd_i = torch.where(one, torch.ones_like(g_taken), c_sd[cluster])
    AS_taken = (g_taken - c_mean[cluster]) / (c_sd_i + std_eps) if std_normalise \
        else g_taken - c_mean[cluster]
    AS = torch.zeros_like(r).masked_scatter(m, AS_taken)
    adv = AE[:, None] + step_weight * AS
    return torch.where(m, adv, torch.zeros_like(adv)).to(turn_rewards.dtype)


def compute_turn_advantages(turn_rewards: Tensor, estimator: str = "gigpo", *, group_size: int,
                            turn_mask: Tensor | None = None, **options) -> Tensor:
    """Turn-level advantages (N, K) by a registered estimator of form ``"turn"``
    (``"turn_rtg"``, ``"mt_grpo"``, ``"gigpo"``, or yours), resolved through the registry.

    ``options`` (``anchors``, ``tool_turns``, ``gamma``, ``std_eps``, ...) go to the
    estimator; an option it does not take is an error naming it. Copy the result to tokens
    with :func:`turns_to_tokens`. Factor of J(θ): reward.
    """
    ok = sorted(c.name for c in components("advantage") if c.form == "turn")
    if not isinstance(estimator, str) or estimator not in ok:
        raise ValueError(f"estimator: expected one of {ok} (registered advantages of form "
                         f"'turn'), got {estimator!r}")
    fn = resolve("advantage", estimator, "turn", what="estimator")
    check_options(fn, options, f"estimator {estimator!r}", skip=2)
    if "turn_mask" in inspect.signature(fn).parameters:
        options["turn_mask"] = turn_mask
    return fn(turn_rewards, group_size, **options)
