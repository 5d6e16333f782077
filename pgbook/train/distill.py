"""GRPO, on-policy distillation and their hybrids on the enumerable tiny LM, many runs at once
(chapter 16).

Every step of :func:`seqlm_opd_train` samples, for each run, ``prompts_per_step`` prompts
× G responses from π_θ, scores them with the verifier R and with a teacher π_T, and takes
one Adam step on the token-level estimator

    ĝ = (1/B) Σ_i Σ_t m_it Â_it ∇log π_θ(y_it | h_it),
    Â_it = v · Â_i^GRPO + λ · g_i · A_it,

where Â_i^GRPO is the group z-score of the verifier's rewards (v = 1 with a verifier, 0 for
pure distillation), A_it the teacher's per-token advantage (:mod:`pgbook.reward.teacher`:
r_t = sg[log π_T − log π_θ](y_t), summed with ``discount`` γ over the tokens that follow)
and g_i a gate on the response's group ("always", "zero_variance", "all_fail"). Runs differ
in λ, v, the teacher (one θ_T per run) and their samples; all are batched with
``torch.func.vmap`` (one generator draws every sample), and each has its own Adam state
(Adam is elementwise, so one optimiser over the (R, P) parameters is R optimisers).

The world is small enough to enumerate, so the records are exact: J(θ) of every run (the
success rate, for a 0/1 verifier), and KL(π_θ‖π_T) of whole responses. Factor of J(θ):
reward (runs differ only in the weight Â of ∇log π_θ); the trajectory side is the plain
score function throughout.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_flag,
    check_generator,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    reject_unknown_options,
)
from ..registry import resolve
from ..reward.advantages import grpo_advantage, zero_variance_groups
from ..reward.teacher import discounted_reward_to_go
from ..worlds.seqlm import SeqPolicy, SeqReward

__all__ = ["SeqOPDHistory", "seqlm_opd_train"]


@dataclass
class SeqOPDHistory:
    """What :func:`seqlm_opd_train` records, float64 CPU tensors.

    ``step`` (E,): the steps at which the exact quantities were recorded (every
    ``eval_every``-th step, before it is taken, and after the last); ``J`` (E, R): exact
    J(θ) of every run then; ``kl_teacher`` (E, R): exact KL(π_θ‖π_T) of whole responses,
    each run against its own teacher; ``zero_variance`` (steps, R): the share of each step's
    groups whose G rewards were all equal; ``teacher_fraction`` (steps, R): the share of
    responses the gate let the teacher's term into; ``theta`` (R, P): the final parameters;
    ``seconds``: the wall time; ``config``: the settings.
    """

    step: Tensor
    J: Tensor
    kl_teacher: Tensor
    zero_variance: Tensor
    teacher_fraction: Tensor
    theta: Tensor
    seconds: float
    config: dict = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return self.J.shape[1]


def _values(value: object, name: str) -> Tensor:
    """A number, a bool or one per run (a sequence or a 1-D tensor) as a tensor."""
    if isinstance(value, (str, bytes)) or value is None:
        raise ValueError(f"{name}: expected a number or one value per run, got {value!r}")
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name}: expected a number or one value per run, got "
                         f"{type(value).__name__} ({e})") from None
    if t.dim() > 1 or not (t.is_floating_point() or t.dtype in (torch.bool, torch.int64,
                                                                  torch.int32)):
        raise ValueError(f"{name}: expected a number or one value per run (1-D), got a "
                         f"{t.dtype} tensor of shape {tuple(t.shape)}")
    return t


def _per_run(value: object, R: int, name: str, dtype: torch.dtype,
             device: torch.device) -> Tensor:
    t = _values(value, name).to(dtype=dtype, device=device)
    if t.dim() == 0:
        t = t.expand(R)
    if t.shape != (R,):
        raise ValueError(f"{name}: expected a number or one value per run ({R}), got shape "
                         f"{tuple(t.shape)}")
    return t


@reject_unknown_options
def seqlm_opd_train(policy: SeqPolicy, theta: Tensor, reward: SeqReward,
                    teacher_policy: SeqPolicy, teacher_theta: Tensor, *, steps: int,
                    prompts_per_step: int, group_size: int, lr: float,
                    generator: torch.Generator,
                    coef: float | Sequence[float] | Tensor = 1.0,
                    use_verifier: bool | Sequence[bool] | Tensor = True,
                    gate: str = "always",
                    discount: float = 0.0, runs: int | None = None, eval_every: int = 10,
                    std_eps: float = 1e-6, progress: bool = False,
                    desc: str | None = None) -> SeqOPDHistory:
    """Train R runs of ``policy`` from θ with verifier and teacher weights (module
    docstring); returns a :class:`SeqOPDHistory`.

    Args:
        theta: the starting θ (P,) of every run.
        reward: the verifier R(x, y) (a :class:`~pgbook.worlds.seqlm.SeqReward`).
        teacher_policy, teacher_theta: the teacher π_T; θ_T (P_T,) for every run or
            (R, P_T), one per run (e.g. teachers of different quality).
        coef: λ ≥ 0, a number or one per run (R,). use_verifier: v, a bool or one per run
            (False: pure distillation).
        gate: a registered ``"teacher_gate"`` ("always", "zero_variance", "all_fail").
        discount: γ ∈ [0, 1] of the teacher's advantage (0: the Tinker recipe; 1: the
            reward-to-go, the exact gradient of −KL(π_θ‖π_T)).
        runs: R, when no argument says it (default 1); otherwise it must agree.
        prompts_per_step, group_size: B = prompts × G responses per run and step (G ≥ 2).
        lr: Adam's learning rate (β = (0.9, 0.999)).
        eval_every: record the exact J and KL every this many steps, and after the last.
    """
    from ..widgets import progress as progress_bar  # the saved output is the finished bar

    for name, pol in (("policy", policy), ("teacher_policy", teacher_policy)):
        if not isinstance(pol, SeqPolicy):
            raise ValueError(f"{name}: expected a pgbook.worlds.seqlm.SeqPolicy, got "
                             f"{type(pol).__name__}")
    if not isinstance(reward, SeqReward):
        raise ValueError(f"reward: expected a pgbook.worlds.seqlm.SeqReward, got "
                         f"{type(reward).__name__}")
    check_flag(progress, "progress")
    steps = check_positive_int(steps, "steps")
    n_prompts = check_positive_int(prompts_per_step, "prompts_per_step")
    G = check_positive_int(group_size, "group_size")
    if G < 2:
        raise ValueError(f"group_size: expected at least 2 responses per prompt, got {G}")
    eval_every = check_positive_int(eval_every, "eval_every")
    lr = check_positive(lr, "lr")
    gamma = check_positive(discount, "discount", allow_zero=True)
    if gamma > 1:
        raise ValueError(f"discount: expected a number in [0, 1], got {gamma}")
    check_positive(std_eps, "std_eps", allow_zero=True)
    gate_fn = resolve("teacher_gate", gate, "group", what="gate")
    check_tensor(theta, "theta", ndim=1, floating=True)
    if theta.shape[0] != policy.n_params:
        raise ValueError(f"theta: expected shape ({policy.n_params},), got {tuple(theta.shape)}")
    check_finite(theta, "theta")
    check_generator(generator, theta.device)
    check_tensor(teacher_theta, "teacher_theta", floating=True)
    if teacher_theta.dim() not in (1, 2) or teacher_theta.shape[-1] != teacher_policy.n_params:
        raise ValueError(f"teacher_theta: expected shape ({teacher_policy.n_params},) or "
                         f"(R, {teacher_policy.n_params}), got {tuple(teacher_theta.shape)}")
    check_finite(teacher_theta, "teacher_theta")
    check_same_device(theta=theta, teacher_theta=teacher_theta)
    if teacher_policy.space is not policy.space and (
            teacher_policy.space.V, teacher_policy.space.T, teacher_policy.space.X) != (
            policy.space.V, policy.space.T, policy.space.X):
        raise ValueError("teacher_policy: expected a policy on the same space (X, V, T) as "
                         "the student")
    sizes = {int(_values(v, k).numel()) for k, v in (("coef", coef),
                                                     ("use_verifier", use_verifier))} | (
        {teacher_theta.shape[0]} if teacher_theta.dim() == 2 else set())
    sizes.discard(1)
    if runs is not None:
        sizes.add(check_positive_int(runs, "runs"))
    if len(sizes) > 1:
        raise ValueError(f"coef, use_verifier, teacher_theta, runs: expected one number of runs, "
                         f"got {sorted(sizes)}")
    R = sizes.pop() if sizes else 1
    dev, dt = theta.device, theta.dtype
    lam = _per_run(coef, R, "coef", dt, dev)
    if bool((lam < 0).any()) or not bool(torch.isfinite(lam).all()):
        raise ValueError(f"coef: expected finite values ≥ 0, got {lam.tolist()}")
    v = _per_run(use_verifier, R, "use_verifier", dt, dev)
    if not bool(((v == 0) | (v == 1)).all()):
        raise ValueError(f"use_verifier: expected booleans, got {v.tolist()}")
    tth = teacher_theta.detach().to(dt)
    tth = tth.expand(R, -1) if tth.dim() == 1 else tth

    space = policy.space
    B = n_prompts * G
    seqs = space.enumerate()
    n = space.n_per_context
    m_all = seqs.mask.to(dt)                                                  # (N, T)
    enum_R = reward.of(seqs).to(dt)                                           # (N,)
    rho = space.rho.to(device=dev, dtype=dt)
    logp_fn = torch.func.vmap(lambda t: policy.token_logprobs(t, seqs.x, seqs.tokens))
    sample_logp = torch.func.vmap(policy.token_logprobs)
    with torch.no_grad():                                      # the teachers are fixed
        lt_all = torch.func.vmap(lambda t: teacher_policy.token_logprobs(
            t, seqs.x, seqs.tokens))(tth).to(dt) * m_all                       # (R, N, T)
    lt_seq = lt_all.sum(-1)

    th = theta.detach().expand(R, -1).clone().requires_grad_(True)
    opt = torch.optim.Adam([th], lr=lr)
    J_hist, kl_hist, when, zv_hist, tf_hist = [], [], [], [], []
    runs_idx = torch.arange(R, device=dev)[:, None]
    t0 = time.perf_counter()
    bar = progress_bar(range(steps + 1), disable=not progress, desc=desc or "GRPO / OPD runs")
    for k in bar:
        with torch.no_grad():
            # every response of the enumeration: its log-prob under each run's θ, (R, N)
            lp_seq = (logp_fn(th.detach()).to(dt) * m_all).sum(-1)
            p = lp_seq.exp()
            if k % eval_every == 0 or k == steps:
                q = rho[seqs.x] * p
                J_hist.append(q @ enum_R)
                kl_hist.append((q * (lp_seq - lt_seq)).sum(-1))
                when.append(k)
            if k == steps:
                break
            # sample: prompts x ~ ρ, G responses each, y ~ p_θ(·|x) by inverting the CDF of
            # the enumerated responses of x
            x = space.sample_contexts(R * n_prompts, generator).to(dev).view(R, n_prompts)
            x = x.repeat_interleave(G, dim=1)                                   # (R, B)
            cdf = p.view(R, space.X, n).cumsum(-1)[runs_idx, x]                # (R, B, n)
            u = torch.rand(R, B, 1, generator=generator, dtype=dt, device=dev) * cdf[..., -1:]
            idx = x * n + (cdf < u).sum(-1).clamp(max=n - 1)                    # (R, B)
            m = m_all[idx]                                                      # (R, B, T)
            Rw = enum_R[idx].reshape(-1)                                        # (R·B,)
            adv = grpo_advantage(Rw, G, std_eps=std_eps).view(R, B, 1) * m
        lp = sample_logp(th, seqs.x[idx], seqs.tokens[idx]).to(dt) * m        # (R, B, T)
        with torch.no_grad():
            r_t = (lt_all[runs_idx, idx] - lp.detach()) * m                    # teacher − student
            A_t = discounted_reward_to_go(r_t, m, gamma)
            g = gate_fn(Rw, G).view(R, B, 1).to(dt)
            weight = v.view(R, 1, 1) * adv + lam.view(R, 1, 1) * g * A_t
            zv_hist.append(zero_variance_groups(Rw, G).view(R, n_prompts).to(dt).mean(1))
            tf_hist.append(g.view(R, B).mean(1))
        loss = -(weight * lp).sum() / B
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    bar.close()
    config = dict(steps=steps, prompts_per_step=n_prompts, group_size=G, lr=lr, gate=gate,
                  discount=gamma, runs=R, eval_every=eval_every, coef=lam.tolist(),
                  use_verifier=v.tolist())
    return SeqOPDHistory(torch.tensor(when), torch.stack(J_hist).to(torch.float64).cpu(),
                         torch.stack(kl_hist).to(torch.float64).cpu(),
                         torch.stack(zv_hist).to(torch.float64).cpu(),
                         torch.stack(tf_hist).to(torch.float64).cpu(),
                         th.detach().cpu(), time.perf_counter() - t0, config)
