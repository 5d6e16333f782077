"""Actor–critic and REINFORCE on the enumerable tiny LM, many runs at once (chapter 10).

Every step of :func:`actor_critic_train` samples B responses per run from π_θ, weights every
token by an advantage Â_t (the reward side; ``advantage`` chooses it) and takes one step of
gradient ascent on the token-level estimator of chapter 09,

    ĝ = (1/B) Σ_b Σ_t m_bt Â_bt ∇log π_θ(y_bt | h_bt),        θ ← θ + η ĝ,

so that runs differ *only* in their advantage, at the same number of sampled responses:

==================  ===========================================================================
``advantage``       Â_t
==================  ===========================================================================
``reward_to_go``    G_t = Σ_{t'≥t} r_t'                      (REINFORCE, no baseline)
``prompt_value``    G_t − V(x), the exact value of the prompt (REINFORCE with the exact baseline)
``group``           G_t − (1/(G−1)) Σ_{j≠i} R_j over G responses to the same prompt (RLOO)
``exact_critic``    GAE(λ) with the exact V(h_t) (an oracle critic)
``critic``          GAE(λ) with a learned critic V_φ(h_t) (actor–critic)
==================  ===========================================================================

With ``critic`` the critic is trained alongside, after the policy step of each batch:
``critic_steps`` Adam steps (learning rate ``critic_lr``) on ½ (V_φ(h_t) − R̂_t)² averaged
over the batch's tokens, R̂ = Â + V_φ the λ-returns of :func:`pgbook.reward.critic.gae`
(verl's and TRL's target). It starts from ``phi`` (e.g. zeros: "no critic yet").

R runs are trained at once, batched with ``torch.func.vmap`` over their parameters (each run
has its own θ, φ, Adam state and samples; the one generator draws them all), and every step
records the *exact* J(θ) of every run (and, with a critic, its exact RMS error against V),
so a learning curve is the true objective. Factor of J(θ): reward (the runs differ only in
Â); the trajectory side is the plain score function throughout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_generator,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    work_dtype,
)
from ..exact.critic import SeqCritic, _value_table, prefix_ids
from ..exact.seqlm import _check_policy, _check_reward, joint_probs
from ..reward.advantages import reward_to_go
from ..reward.critic import gae
from ..worlds.seqlm import SeqPolicy, SeqReward, Sequences, TabularPolicy

__all__ = ["ADVANTAGES", "ActorCriticHistory", "actor_critic_train"]

ADVANTAGES = ("reward_to_go", "prompt_value", "group", "exact_critic", "critic")


@dataclass
class ActorCriticHistory:
    """What :func:`actor_critic_train` records, float64 CPU tensors.

    ``step`` (E,): the steps at which the exact quantities were recorded (every
    ``eval_every``-th step, before it is taken, and after the last: ``steps``);
    ``J`` (E, R): exact J(θ) of every run then; ``critic_error`` (E, R): the exact RMS error of the critic against V over the
    prefixes the policy visits (:func:`pgbook.exact.critic.critic_error`), at the same
    times (None without a learned critic); ``theta`` (R, P) and ``phi`` (R, P_φ) the final
    parameters; ``seconds`` the wall time; ``config`` the settings.
    """

    step: Tensor
    J: Tensor
    critic_error: Tensor | None
    theta: Tensor
    phi: Tensor | None
    seconds: float
    config: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.step[-1])

    @property
    def runs(self) -> int:
        return self.J.shape[1]

    def mean(self) -> Tensor:
        """Mean exact J over runs, (E,)."""
        return self.J.mean(1)

    def stderr(self) -> Tensor:
        """Standard error of the mean over runs, (E,)."""
        return self.J.std(1) / self.runs ** 0.5


def _sample(policy: SeqPolicy, theta: Tensor, x: Tensor, generator: torch.Generator):
    """Responses for R runs at once: x (R, B) → tokens (R, B, T), mask (R, B, T).

    Token y_t is drawn by inverting the CDF of π_θ(·|h_t) at a uniform u_t drawn beforehand
    (all R·B·T of them from ``generator``), so that the whole autoregressive loop of every
    run is one ``vmap`` call."""
    sp = policy.space
    R, B = x.shape
    work = torch.promote_types(theta.dtype, torch.float32)
    u = torch.rand(R, B, sp.T, generator=generator, dtype=work, device=theta.device)
    positions = torch.arange(sp.T, device=theta.device)

    def one(t, xr, ur):                              # one run: (B,) prompts → (B, T) tokens
        tokens = torch.full((B, sp.T), sp.pad_id, dtype=torch.long, device=xr.device)
        done = torch.zeros(B, dtype=torch.bool, device=xr.device)
        for pos in range(sp.T):
            cdf = torch.softmax(policy.logits(t, xr, tokens)[:, pos].to(work), -1).cumsum(-1)
            y = (cdf < ur[:, pos:pos + 1]).sum(-1).clamp(max=sp.V - 1)
            y = torch.where(done, torch.full_like(y, sp.pad_id), y)
            tokens = torch.where(positions == pos, y.unsqueeze(-1), tokens)
            done = done | (y == sp.eos_id)
        return tokens

    tokens = torch.func.vmap(one)(theta, x, u)
    return tokens, sp.response_mask(tokens, theta.dtype)


def actor_critic_train(policy: SeqPolicy, theta: Tensor, reward: SeqReward, *, steps: int,
                       n_samples: int, lr: float, generator: torch.Generator, runs: int = 1,
                       advantage: str = "critic", lam: float | None = None, critic: SeqCritic | None = None,
                       phi: Tensor | None = None, critic_lr: float | None = None,
                       critic_steps: int | None = None,
                       group_size: int | None = None, eval_every: int = 1,
                       progress: bool = False, desc: str | None = None) -> ActorCriticHistory:
    """Train ``runs`` copies of ``policy`` from θ with the advantage ``advantage`` (module
    docstring); returns an :class:`ActorCriticHistory`.

    Args:
        theta: the starting θ (P,) of every run.
        n_samples: B responses per run and step (for ``"group"``, B/G prompts × G).
        lr: η of plain gradient ascent θ ← θ + η ĝ (no optimiser state: runs that differ
            only in Â differ only in their estimator's noise and bias).
        advantage: one of ``ADVANTAGES``; ``lam`` λ ∈ [0, 1] for the two GAE advantages
            (γ = 1; None: 1.0). Refused with the other advantages, which do not use it.
        critic, phi: the learned critic (``"critic"`` only) and its starting φ (P_φ,).
        critic_lr, critic_steps: its Adam learning rate and steps per batch (None: 0.1 and
            1); ``"critic"`` only, like ``critic`` and ``phi``.
        group_size: G for ``"group"`` (must divide ``n_samples``; at least 2).
        eval_every: record the exact J (and critic error) every this many steps, and after
            the last (each record costs one pass over the enumeration per run).
        progress, desc: a tqdm bar and its label.
    """
    from ..widgets import progress as progress_bar  # the saved output is the finished bar

    steps = check_positive_int(steps, "steps")
    eval_every = check_positive_int(eval_every, "eval_every")
    B = check_positive_int(n_samples, "n_samples")
    R = check_positive_int(runs, "runs")
    lr = check_positive(lr, "lr")
    if advantage not in ADVANTAGES:
        raise ValueError(f"advantage: expected one of {ADVANTAGES}, got {advantage!r}")
    given = [name for name, v in (("lam", lam), ("critic_lr", critic_lr),
                                  ("critic_steps", critic_steps)) if v is not None]
    uses = {"exact_critic": ("lam",), "critic": ("lam", "critic_lr", "critic_steps")}
    unused = [name for name in given if name not in uses.get(advantage, ())]
    if unused:
        raise ValueError(f"{', '.join(unused)}: advantage={advantage!r} does not use "
                         f"{'it' if len(unused) == 1 else 'them'} (lam is for 'exact_critic' "
                         f"and 'critic', critic_lr and critic_steps for 'critic' only), got "
                         + ", ".join(f"{n}={v!r}" for n, v in (("lam", lam), ("critic_lr", critic_lr),
                                                              ("critic_steps", critic_steps))
                                     if n in unused))
    lam = 1.0 if lam is None else check_positive(lam, "lam", allow_zero=True)
    critic_lr = 0.1 if critic_lr is None else critic_lr
    critic_steps = 1 if critic_steps is None else critic_steps
    if lam > 1:
        raise ValueError(f"lam: expected a number in [0, 1], got {lam}")
    _check_policy(policy, theta)          # a SeqPolicy and a finite (P,) θ on its device
    _check_reward(reward)
    check_generator(generator, theta.device)
    if not isinstance(progress, bool):
        raise ValueError(f"progress: expected True or False, got {progress!r}")
    if advantage == "critic":
        if critic is None or phi is None:
            raise ValueError("critic, phi: advantage='critic' needs a critic and its starting phi")
        if not isinstance(critic, SeqCritic):
            raise ValueError(f"critic: expected a SeqCritic (MLPCritic, TabularCritic), got "
                             f"{type(critic).__name__}")
        if (critic.space.X, critic.space.V, critic.space.T) != \
                (policy.space.X, policy.space.V, policy.space.T):
            raise ValueError("critic: expected a critic on the policy's space")
        check_tensor(phi, "phi", ndim=1, floating=True)
        if phi.shape[0] != critic.n_params:
            raise ValueError(f"phi: expected shape ({critic.n_params},), got {tuple(phi.shape)}")
        check_same_device(phi=phi, theta=theta)
        check_finite(phi, "phi")
        check_positive(critic_lr, "critic_lr")
        check_positive_int(critic_steps, "critic_steps")
    elif critic is not None or phi is not None:
        raise ValueError(f"critic, phi: only advantage='critic' trains a critic, got "
                         f"advantage={advantage!r}")
    G = 1
    if advantage == "group":
        if group_size is None:
            raise ValueError("group_size: advantage='group' needs the group size G")
        G = check_positive_int(group_size, "group_size")
        if G < 2 or B % G:
            raise ValueError(f"group_size: expected G ≥ 2 dividing n_samples = {B}, got {G}")
    elif group_size is not None:
        raise ValueError(f"group_size: only advantage='group' uses groups, got advantage="
                         f"{advantage!r}")

    space = policy.space
    seqs = space.enumerate()
    T = space.T
    n_ids = space.X * TabularPolicy(space).n_prefixes
    enum_ids = prefix_ids(space, seqs.x, seqs.tokens)
    wd = work_dtype(theta.dtype)           # the exact sums run in float32 for bfloat16 θ
    enum_m = seqs.mask.to(wd)
    enum_r = reward.token_rewards(seqs.x, seqs.tokens, seqs.mask).to(wd)
    enum_G = reward_to_go(enum_r, enum_m)
    # The exact quantities a step needs are sums of q(x, y) G_t(y) over the enumeration, so
    # only the responses with a non-zero return enter them (for a sparse outcome reward, a
    # fraction of all): J, V(x) and the numerators of V(h_t). The denominator of V(h_t), the
    # probability ρ(x) p_θ(h_t) of the prefix, comes from the sampled tokens' own log-probs.
    live = (enum_G != 0).any(-1)
    sub = Sequences(seqs.x[live], seqs.tokens[live], seqs.mask[live])
    sub_ids, sub_m, sub_G = enum_ids[live], enum_m[live], enum_G[live]
    rho = space.rho.to(wd)
    n_pref = n_ids // space.X

    def numerators(t):                     # Σ_{y ⊒ h} q(x, y) G_t(y) per prefix id, (n_ids,)
        q = joint_probs(policy, t, sub)
        w = (q.unsqueeze(-1) * sub_m * sub_G).reshape(-1)
        return q.new_zeros(n_ids).index_add(0, sub_ids.reshape(-1), w), q @ sub_G[:, 0]

    nums = torch.func.vmap(numerators)
    probs = torch.func.vmap(lambda t: joint_probs(policy, t, seqs))
    tables = torch.func.vmap(lambda q: _value_table(q, enum_G, enum_m, enum_ids, n_ids))
    logp_fn = torch.func.vmap(policy.token_logprobs)
    th = theta.detach().expand(R, -1).clone()
    ph = None
    opt = None
    if advantage == "critic":
        ph = phi.detach().to(theta.dtype).expand(R, -1).clone().requires_grad_(True)
        opt = torch.optim.Adam([ph], lr=critic_lr)
        values_fn = torch.func.vmap(critic.values)
        enum_values = torch.func.vmap(critic.values, in_dims=(0, None, None))

    def record(th_):
        """Exact J of every run, and the critic's exact RMS error against V."""
        if ph is None:
            J_hist.append(nums(th_)[1])
            return
        q = probs(th_)
        J_hist.append(q @ enum_G[:, 0])
        V = tables(q)[:, enum_ids] * enum_m                                   # (R, N, T)
        sq = ((enum_values(ph.detach(), seqs.x, seqs.tokens) - V) * enum_m).pow(2).sum(-1)
        err_hist.append(((sq * q).sum(-1) / (q @ enum_m.sum(-1))).sqrt())

    J_hist, err_hist, when = [], [], []
    t0 = time.perf_counter()
    bar = progress_bar(range(steps), disable=not progress, desc=desc or advantage)
    for k in bar:
        with torch.no_grad():
            if k % eval_every == 0:
                record(th)
                when.append(k)
            x = space.sample_contexts(R * (B // G), generator).to(theta.device).view(R, B // G)
            x = x.repeat_interleave(G, dim=1)
            tokens, m = _sample(policy, th, x, generator)
            r = reward.token_rewards(x.reshape(-1), tokens.reshape(-1, T),
                                     m.reshape(-1, T)).to(th.dtype).view(R, B, T)
            Gt = reward_to_go(r, m)
            if advantage == "reward_to_go":
                adv = Gt
            elif advantage == "prompt_value":
                num = nums(th)[0][:, ::n_pref]                                # V(x) ρ(x), (R, X)
                adv = (Gt - (num / rho).gather(1, x).unsqueeze(-1)) * m
            elif advantage == "group":
                Rg = Gt[..., 0].view(R, B // G, G)
                loo = ((Rg.sum(-1, keepdim=True) - Rg) / (G - 1)).view(R, B, 1)
                adv = (Gt - loo) * m
            else:
                if advantage == "exact_critic":
                    ids = prefix_ids(space, x.reshape(-1), tokens.reshape(-1, T)).view(R, -1)
                    lp = (logp_fn(th, x, tokens).to(th.dtype) * m).cumsum(-1)
                    log_prefix = torch.cat([lp.new_zeros(R, B, 1), lp[..., :-1]], -1)
                    den = rho[x].unsqueeze(-1) * log_prefix.exp()                # ρ(x) p(h_t)
                    V = nums(th)[0].gather(1, ids).view(R, B, T) / den * m
                else:
                    V = values_fn(ph.detach(), x, tokens) * m
                adv, ret = gae(r.reshape(-1, T), V.reshape(-1, T), m.reshape(-1, T), 1.0, lam)
                adv, ret = adv.view(R, B, T), ret.view(R, B, T)
        # the policy step: gradient ascent on (1/B) Σ_b Σ_t m Â log π, each run its own
        th_req = th.clone().requires_grad_(True)
        lp = logp_fn(th_req, x, tokens).to(th.dtype)
        surrogate = (m * adv * lp).sum() / B
        (grad,) = torch.autograd.grad(surrogate, th_req)
        th = (th + lr * grad).detach()
        # the critic: regression on the λ-returns of the batch
        if ph is not None:
            n_tok = m.sum((1, 2))
            for _k in range(critic_steps):
                err = (values_fn(ph, x, tokens) - ret) * m
                loss = (0.5 * err.pow(2).sum((1, 2)) / n_tok).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    with torch.no_grad():
        record(th)
        when.append(steps)
    bar.close()
    config = dict(advantage=advantage, lam=lam, n_samples=B, runs=R, lr=lr, steps=steps,
                  eval_every=eval_every,
                  group_size=group_size, critic=repr(critic) if critic is not None else None,
                  critic_lr=critic_lr if critic is not None else None,
                  critic_steps=critic_steps if critic is not None else None)
    return ActorCriticHistory(
        torch.tensor(when), torch.stack(J_hist).to(torch.float64).cpu(),
        torch.stack(err_hist).to(torch.float64).cpu() if err_hist else None,
        th.cpu(), None if ph is None else ph.detach().cpu(), time.perf_counter() - t0, config)
