"""GRPO-family training on the enumerable tiny LM, where every step's J(θ) is exact (chapter 14).

:func:`grpo_seqlm` is :func:`pgbook.train.grpo.grpo_train`'s loop for the enumerable
language model of :mod:`pgbook.worlds.seqlm` (a functional policy π_θ with θ a flat
vector), with the knobs chapter 14 turns on the trajectory side:

1. **Rollout.** ``prompts_per_step`` prompts x ~ ρ, each repeated G = ``group_size`` times
   (groups contiguous), one response each, drawn from π_θold, or from a ``sampler`` policy
   μ_θold (the same θ computed differently: the rollout engine), whose token log-probs are
   kept as ``sampler_logp``. With ``dynamic_sampling``, groups whose rewards are all equal
   are dropped and more prompts drawn (DAPO), every response counted in ``rollouts``.
2. **Advantages** from the group rewards (a registered group estimator), broadcast to tokens.
3. **Old log-probs** log π_θold(y_t|h_t) recomputed by the trainer; with ``trainer_noise``
   = s > 0 every trainer evaluation of a token log-prob (the old ones and each epoch's)
   adds fresh N(0, s²) noise to its *value* (not its gradient): a stand-in for the
   nondeterminism of a mixture-of-experts router, which sends the same token to other
   experts from one forward pass to the next.
4. **μ = ``epochs_per_batch`` epochs** of ``minibatches`` whole-group minibatches, each one
   optimiser step on :func:`pgbook.methods.policy_loss` (any registered loss, aggregation
   and sampler correction; no KL term).

Every step records θ (``thetas``), so any exact quantity along the run (J, entropy, the
mass of particular responses) is computed afterwards by enumeration
(:func:`pgbook.exact.trajectory.path_stats`). Shapes: θ (P,), the batch B = prompts ×
G responses of T tokens. Runs on the device and dtype of θ (float64 is the book's choice).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .. import methods as _methods
from .._validate import (
    check_finite,
    check_generator,
    check_index,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    keyword_names,
    reject_unknown_options,
)
from ..registry import get, resolve
from ..registry import method as method_registry
from ..reward import advantages as _adv
from ..trajectory.selection import dynamic_sampling_order, informative_groups
from ..worlds.seqlm import SeqPolicy, SeqReward, Sequences

__all__ = ["SeqLMHistory", "grpo_seqlm", "sample_runs"]


@dataclass
class SeqLMHistory:
    """What :func:`grpo_seqlm` recorded, for R runs (a leading run dimension is dropped when
    θ0 was one vector). ``thetas`` (steps + 1, R, P): θ before every step and after the last;
    per step (steps, R) float64 CPU tensors: ``reward`` (mean batch reward, before any
    filtering), ``clip_fraction`` (mean over the step's updates of the share of tokens whose
    gradient a clip cut), ``zero_variance_groups`` (in the batch trained on), ``rollouts``
    (responses generated), ``ratio_max``, ``loss``; ``config`` the settings."""

    thetas: Tensor
    reward: Tensor
    clip_fraction: Tensor
    zero_variance_groups: Tensor
    rollouts: Tensor
    ratio_max: Tensor
    loss: Tensor
    config: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.reward.shape[0]


def sample_runs(policy: SeqPolicy, thetas: Tensor, x: Tensor, generator: torch.Generator
                ) -> Sequences:
    """Responses of R policies at once: ``thetas`` (R, P), prompts ``x`` (R, B) → a
    :class:`~pgbook.worlds.seqlm.Sequences` with ``x`` (R, B), ``tokens``/``mask``/``logp``
    (R, B, T), the log-probs recorded while sampling (0 after EOS). Token by token, every
    run and row in one batched step (``torch.func.vmap`` over the runs' logits)."""
    if not isinstance(policy, SeqPolicy):
        raise ValueError(f"policy: expected a SeqPolicy, got {type(policy).__name__}")
    sp = policy.space
    check_tensor(thetas, "thetas", ndim=2, floating=True)
    if thetas.shape[1] != policy.n_params:
        raise ValueError(f"thetas: expected shape (R, {policy.n_params}), got "
                         f"{tuple(thetas.shape)}")
    check_tensor(x, "x", ndim=2)
    if x.shape[0] != thetas.shape[0]:
        raise ValueError(f"x: expected {thetas.shape[0]} rows (one per run), got shape "
                         f"{tuple(x.shape)}")
    check_same_device(thetas=thetas, x=x, space=sp.rho)
    check_index(x, "x", sp.X)
    check_finite(thetas, "thetas")
    check_generator(generator, thetas.device)
    R, B = x.shape
    th = thetas.detach()
    logits = torch.func.vmap(policy.logits)
    tokens = torch.full((R, B, sp.T), sp.pad_id, dtype=torch.long, device=th.device)
    logp = th.new_zeros(R, B, sp.T, dtype=torch.promote_types(th.dtype, torch.float32))
    done = torch.zeros(R, B, dtype=torch.bool, device=th.device)
    with torch.no_grad():
        for t in range(sp.T):
            lp = torch.log_softmax(logits(th, x, tokens)[:, :, t].to(logp.dtype), -1)
            y = torch.multinomial(lp.exp().reshape(R * B, -1), 1, generator=generator).view(R, B)
            y = torch.where(done, torch.full_like(y, sp.pad_id), y)
            tokens[:, :, t] = y
            logp[:, :, t] = torch.where(done, lp.new_zeros(()),
                                        lp.gather(-1, y.unsqueeze(-1)).squeeze(-1))
            done = done | (y == sp.eos_id)
    return Sequences(x, tokens, sp.response_mask(tokens, th.dtype), logp)


def _take(s: Sequences, rows: Tensor) -> Sequences:
    """Rows (R, B') of a run-batched :class:`Sequences`, per run."""
    def g(t):
        idx = rows.reshape(*rows.shape, *([1] * (t.dim() - 2))).expand(*rows.shape, *t.shape[2:])
        return torch.gather(t, 1, idx)
    return Sequences(g(s.x), g(s.tokens), g(s.mask), g(s.logp))


def _cat(seqs: list[Sequences]) -> Sequences:
    return Sequences(*(torch.cat([getattr(q, k) for q in seqs], 1)
                       for k in ("x", "tokens", "mask", "logp")))


def _noisy(lp: Tensor, mask: Tensor, s: Tensor | None, generator) -> Tensor:
    """lp + s_r · ε on the mask, ε ~ N(0, 1) fresh, a constant for autograd (per run r)."""
    if s is None:
        return lp
    eps = torch.randn(lp.shape, generator=generator, device=lp.device, dtype=lp.dtype)
    return lp + (s.view(-1, *([1] * (lp.dim() - 1))) * eps * mask).detach()


class _Adam:
    """Adam (Kingma & Ba 2015; β = (0.9, 0.99), ε = 1e-8, bias-corrected) on one tensor,
    written out: ``torch.optim``'s first step imports ``torch._dynamo``, which takes
    seconds on a laptop CPU, longer than a whole run here. Elementwise, so R runs stacked in
    one tensor are R independent optimisers."""

    def __init__(self, theta: Tensor, lr: float, betas=(0.9, 0.99), eps: float = 1e-8):
        self.theta, self.lr, self.b1, self.b2, self.eps = theta, lr, betas[0], betas[1], eps
        self.m = torch.zeros_like(theta)
        self.v = torch.zeros_like(theta)
        self.k = 0

    @torch.no_grad()
    def step(self) -> None:
        g = self.theta.grad
        self.k += 1
        self.m.mul_(self.b1).add_(g, alpha=1 - self.b1)
        self.v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
        m_hat = self.m / (1 - self.b1 ** self.k)
        v_hat = self.v / (1 - self.b2 ** self.k)
        self.theta.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))


@reject_unknown_options
def grpo_seqlm(policy: SeqPolicy, theta0: Tensor, reward: SeqReward, *, steps: int,
               prompts_per_step: int, group_size: int, generator: torch.Generator,
               method: str = "GRPO", advantage: str | None = None, loss: str | None = None,
               aggregation: str | None = None, eps_low: float | None = None,
               eps_high: float | None = None, epochs_per_batch: int = 1, minibatches: int = 1,
               lr: float = 0.05, std_eps: float | None = None,
               trainer_noise: float | Tensor = 0.0,
               sampler: SeqPolicy | None = None, correction: str | None = None,
               correction_max: float | None = 2.0, correction_min: float | None = None,
               dynamic_sampling: bool | None = None, max_gen_batches: int = 10,
               loss_options: dict | None = None, progress: bool = False,
               desc: str | None = None) -> SeqLMHistory:
    """Train θ of an enumerable-LM ``policy`` with a GRPO-family method (module docstring);
    returns a :class:`SeqLMHistory` (``theta0`` itself is not modified).

    Args:
        policy, theta0, reward: the world (:class:`pgbook.worlds.seqlm.SeqPolicy`, θ0 (P,)
            for one run or (R, P) for R independent runs trained at once, a
            :class:`~pgbook.worlds.seqlm.SeqReward`). Runs share nothing but the generator
            (each has its own batches and its own Adam state); the loss of all runs is
            computed in one batched call (``torch.func.vmap``), or run by run for a loss
            that reads its inputs' values (Clip-Cov, KL-Cov).
        method: a registered method whose advantage, loss, aggregation, correction and
            data choice (DAPO's dynamic sampling) are used; ``advantage``, ``loss``,
            ``aggregation``, ``correction``, ``dynamic_sampling`` override them. Its KL
            piece is not used (no reference model here).
        eps_low, eps_high, loss_options: the clip range and other options of the loss (a
            loss that takes a ``generator`` gets this run's).
        epochs_per_batch, minibatches: μ passes over each batch, in ``minibatches``
            whole-group minibatches (a divisor of ``prompts_per_step``; shuffled).
        lr: Adam's learning rate (β = (0.9, 0.99), ε = 1e-8; the same update as
            ``torch.optim.Adam``, written out to spare its first-step import).
        trainer_noise: s ≥ 0 (a number, or one per run), the std of the noise added to every
            trainer log-prob value.
        sampler: a policy with the same parameters θ that draws the rollouts (e.g.
            :class:`pgbook.exact.trajectory.Mismatched`); its log-probs are the
            ``sampler_logp`` of the correction (``correction``, ``correction_max``,
            ``correction_min``, :mod:`pgbook.trajectory.corrections`).
        dynamic_sampling, max_gen_batches: DAPO's filter and resample, as in
            :func:`pgbook.train.grpo.grpo_train` (every run draws more batches until it is
            full; a run counts only the batches it needed).
        progress: a tqdm bar (``desc`` its label).
    """
    from ..widgets import progress as progress_bar  # the saved output is the finished bar

    check_tensor(theta0, "theta0", floating=True)
    if theta0.dim() not in (1, 2):
        raise ValueError(f"theta0: expected shape (P,) or (R, P), got {tuple(theta0.shape)}")
    if not isinstance(policy, SeqPolicy):
        raise ValueError(f"policy: expected a pgbook.worlds.seqlm.SeqPolicy, got "
                         f"{type(policy).__name__}")
    if theta0.shape[-1] != policy.n_params:
        raise ValueError(f"theta0: expected a last dimension of {policy.n_params} (the "
                         f"policy's parameters), got {tuple(theta0.shape)}")
    check_same_device(theta0=theta0, space=policy.space.rho)
    check_finite(theta0, "theta0")
    if not isinstance(reward, SeqReward):
        raise ValueError(f"reward: expected a pgbook.worlds.seqlm.SeqReward, got "
                         f"{type(reward).__name__}")
    if sampler is not None and (not isinstance(sampler, SeqPolicy)
                                or sampler.n_params != policy.n_params
                                or (sampler.space.X, sampler.space.V, sampler.space.T)
                                != (policy.space.X, policy.space.V, policy.space.T)):
        raise ValueError(f"sampler: expected a SeqPolicy with the policy's {policy.n_params} "
                         f"parameters, got {sampler!r}")
    single = theta0.dim() == 1
    th0 = theta0.detach().reshape(-1, policy.n_params)
    n_runs = th0.shape[0]
    steps = check_positive_int(steps, "steps")
    n_prompts = check_positive_int(prompts_per_step, "prompts_per_step")
    G = check_positive_int(group_size, "group_size")
    mu = check_positive_int(epochs_per_batch, "epochs_per_batch")
    n_mb = check_positive_int(minibatches, "minibatches")
    max_gen_batches = check_positive_int(max_gen_batches, "max_gen_batches")
    if G < 2:
        raise ValueError(f"group_size: expected at least 2 responses per prompt, got {G}")
    if n_prompts % n_mb:
        raise ValueError(f"minibatches: expected a divisor of prompts_per_step = {n_prompts}, "
                         f"got {n_mb}")
    lr = check_positive(lr, "lr")
    noise = torch.as_tensor(trainer_noise, dtype=th0.dtype, device=th0.device).reshape(-1)
    if noise.shape[0] not in (1, n_runs) or not bool(torch.isfinite(noise).all()) \
            or bool((noise < 0).any()):
        raise ValueError(f"trainer_noise: expected a number ≥ 0 or one per run ({n_runs}), "
                         f"got {trainer_noise!r}")
    noise = None if bool((noise == 0).all()) else noise.expand(n_runs)
    check_generator(generator, th0.device)
    if loss_options is not None and not isinstance(loss_options, dict):
        raise ValueError(f"loss_options: expected a dict, got {type(loss_options).__name__}")

    cfg = _methods.method_config(method)
    for k, v in (("advantage", advantage), ("policy_loss", loss), ("aggregation", aggregation)):
        if v is not None:
            cfg[k] = v
    if get("advantage", cfg["advantage"]).form not in ("group", "batch"):
        raise ValueError(f"advantage: expected a group estimator, got {cfg['advantage']!r}")
    loss_fn = resolve("policy_loss", cfg["policy_loss"], "token", what="loss")
    resolve("aggregation", cfg["aggregation"], "token", what="aggregation")
    parts = method_registry(method).resolved_parts()
    correction = parts.get("correction", "none") if correction is None else correction
    if correction != "none":
        resolve("correction", correction, "weights", what="correction")
        if sampler is None:
            raise ValueError(f"correction: {correction!r} needs a sampler that differs from "
                             f"the policy")
    if dynamic_sampling is not None and not isinstance(dynamic_sampling, bool):
        raise ValueError(f"dynamic_sampling: expected True, False or None (the method's "
                         f"choice), got {dynamic_sampling!r}")
    dyn = parts.get("data") == "dynamic_sampling" if dynamic_sampling is None \
        else bool(dynamic_sampling)
    extra = dict(loss_options or {})
    if "generator" in keyword_names(loss_fn, 3)[0]:
        extra.setdefault("generator", generator)
    if sampler is not None:
        extra.update(correction=correction, correction_max=correction_max,
                     correction_min=correction_min)
    adv_options = {} if std_eps is None else {"std_eps": std_eps}

    def run_loss(lp, old, adv, mk, slp):
        kw = dict(extra) if slp is None else dict(extra, sampler_logp=slp)
        value, met = _methods.policy_loss(lp, old, adv, mk, loss=cfg["policy_loss"],
                                          aggregation=cfg["aggregation"], eps_low=eps_low,
                                          eps_high=eps_high, max_tokens=policy.space.T, **kw)
        return value, met["clip_fraction"], met["ratio_max"]

    batched = {"ok": True}

    def losses(lp, old, adv, mk, slp):
        """(R,) losses, clip fractions and max ratios: one vmapped call, or run by run."""
        if batched["ok"]:
            try:
                if slp is None:
                    return torch.func.vmap(lambda a, b, c, d: run_loss(a, b, c, d, None))(
                        lp, old, adv, mk)
                return torch.func.vmap(run_loss)(lp, old, adv, mk, slp)
            except Exception:       # a loss that reads values (Clip-Cov): one call per run
                batched["ok"] = False
        out = [run_loss(lp[r], old[r], adv[r], mk[r], None if slp is None else slp[r])
               for r in range(lp.shape[0])]
        return tuple(torch.stack(z) for z in zip(*out))

    theta = th0.clone().requires_grad_(True)
    adam = _Adam(theta, lr)
    rho = policy.space.rho.to(device=th0.device, dtype=torch.float64)
    tok_lp = torch.func.vmap(policy.token_logprobs)
    roller = sampler or policy
    per_mb = n_prompts // n_mb
    arange_G = torch.arange(G, device=th0.device)
    names = ("reward", "clip_fraction", "zero_variance_groups", "rollouts", "ratio_max", "loss")
    rec = {k: [] for k in names}
    thetas = [theta.detach().clone()]

    def draw(th):
        x = torch.multinomial(rho, n_runs * n_prompts, replacement=True, generator=generator)
        s = sample_runs(roller, th, x.view(n_runs, n_prompts).repeat_interleave(G, 1), generator)
        return s, reward.of(Sequences(s.x.reshape(-1), s.tokens.reshape(-1, policy.space.T),
                                      s.mask.reshape(-1, policy.space.T))
                            ).to(th.dtype).view(n_runs, -1)

    bar = progress_bar(range(steps), disable=not progress, desc=desc or f"{method} (G={G}, μ={mu})")
    for _ in bar:
        th = theta.detach()
        s, R = draw(th)
        rec["reward"].append(R.mean(1))
        n_roll = torch.full((n_runs,), float(n_prompts * G), dtype=torch.float64)
        if dyn:   # DAPO: keep informative groups, draw more batches until every run is full
            batches, Rs = [s], [R]
            found = informative_groups(R.reshape(-1), G).view(n_runs, -1).sum(1)
            while bool((found < n_prompts).any()) and len(batches) < max_gen_batches:
                n_roll += (found < n_prompts).to(n_roll.dtype) * n_prompts * G
                s2, R2 = draw(th)
                batches.append(s2)
                Rs.append(R2)
                found += informative_groups(R2.reshape(-1), G).view(n_runs, -1).sum(1)
            if len(batches) > 1:
                Rall = torch.cat(Rs, 1)                                   # (R, K·G)
                info = informative_groups(Rall.reshape(-1), G).view(n_runs, -1)
                keep = torch.stack([dynamic_sampling_order(info[r], n_prompts)
                                    for r in range(n_runs)])              # (R, n_prompts)
                rows = (keep[..., None] * G + arange_G).reshape(n_runs, -1)
                s, R = _take(_cat(batches), rows), torch.gather(Rall, 1, rows)
        m = s.mask
        with torch.no_grad():
            old = _noisy(tok_lp(th, s.x, s.tokens), m, noise, generator)
            A = torch.stack([_adv.compute_advantages(R[r], cfg["advantage"], group_size=G,
                                                     mask=m[r], **adv_options)
                             for r in range(n_runs)])
            A_tok = A.to(th.dtype) * m if A.dim() == 3 else A.to(th.dtype).unsqueeze(-1) * m
        clips, rmax, vals = [], [], []
        for _epoch in range(mu):
            order = torch.randperm(n_prompts, generator=generator, device=th.device) \
                if n_mb > 1 else torch.arange(n_prompts, device=th.device)
            for k in range(n_mb):
                g = order[k * per_mb:(k + 1) * per_mb]
                idx = (g[:, None] * G + arange_G).reshape(-1)
                lp = _noisy(tok_lp(theta, s.x[:, idx], s.tokens[:, idx]), m[:, idx], noise,
                            generator)
                value, clip, ratio_max = losses(lp, old[:, idx], A_tok[:, idx], m[:, idx],
                                                None if sampler is None else s.logp[:, idx])
                theta.grad = None
                value.sum().backward()          # runs are independent: Adam is elementwise
                adam.step()
                clips.append(clip.detach())
                rmax.append(ratio_max.detach())
                vals.append(value.detach())
        rec["clip_fraction"].append(torch.stack(clips).mean(0))
        rec["ratio_max"].append(torch.stack(rmax).amax(0))
        rec["loss"].append(torch.stack(vals).mean(0))
        rec["zero_variance_groups"].append(
            _adv.zero_variance_groups(R.reshape(-1), G).view(n_runs, -1).sum(1))
        rec["rollouts"].append(n_roll)
        thetas.append(theta.detach().clone())
    bar.close()
    out = {k: torch.stack([v.to("cpu", torch.float64) for v in rec[k]]) for k in names}
    th_all = torch.stack(thetas)
    if single:
        out = {k: v[:, 0] for k, v in out.items()}
        th_all = th_all[:, 0]
    config = dict(method=method, **cfg, group_size=G, prompts_per_step=n_prompts,
                  epochs_per_batch=mu, minibatches=n_mb, eps_low=eps_low, eps_high=eps_high,
                  lr=lr, trainer_noise=trainer_noise, correction=correction,
                  dynamic_sampling=dyn, runs=n_runs,
                  sampler=repr(sampler) if sampler is not None else None)
    return SeqLMHistory(th_all, **out, config=config)
