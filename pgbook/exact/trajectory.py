"""Exact analysis of the trajectory side after GRPO on the enumerable LM (chapter 14).

Every response can be listed (:mod:`pgbook.worlds.seqlm`), so for a policy π_θ:

* the **entropy** of whole responses, H(θ) = −Σ_x ρ(x) Σ_y p_θ(y|x) log p_θ(y|x), and J(θ),
  along a whole training run (:func:`path_stats`);
* the update of *any* registered loss on many sampled batches at once, each batch with its
  own noise, clip and ratio, exact given the batch (:func:`batch_updates`: one vmapped
  forward and backward pass), and the score table S[n, t] = ∇_θ log π_θ(y_nt|h_nt) of every
  enumerated response and position (:func:`token_scores`);
* the **expected update under a mismatched sampler** μ with a correction (TIS, MIS,
  sequence IS), exactly, with its effective sample size (:func:`corrected_gradient`).

:class:`Mismatched` is such a sampler: the trainer's logits plus a fixed perturbation of
every (prompt, prefix, token), a stand-in for an inference engine that computes "the same"
policy with other kernels or precision.

Shapes: θ (P,); N enumerated pairs, T positions; batches (M, B). Runs on the device and
dtype of θ (float64 is the book's choice for exact work).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import methods as _methods
from .._validate import (
    check_finite,
    check_generator,
    check_index,
    check_positive,
    check_positive_int,
    check_probs,
    check_same_device,
    check_shape,
    check_tensor,
    work_dtype,
)
from ..reward.advantages import compute_advantages
from ..trajectory.corrections import correction_weights
from ..worlds.seqlm import SeqPolicy, SeqReward, Sequences, TabularPolicy
from .seqlm import _check_policy, _check_reward, _seqs, exact_gradient, sequence_logprobs

__all__ = [
    "Mismatched",
    "batch_updates",
    "corrected_gradient",
    "path_stats",
    "sample_enumerated",
    "sequence_entropy",
    "token_scores",
]


class Mismatched(SeqPolicy):
    """The rollout engine's version of ``policy``: logits_μ = logits_θ + s · ξ(x, y_<t),
    with ξ a fixed table of N(0, 1) (or Student-t with an integer ``df`` degrees of freedom,
    for heavy tails) entries over (prompt, prefix, token) drawn once from ``generator``. Same θ,
    same parameters; ``scale`` = s sets the size of the mismatch (s = 0: the policy itself).
    Factor of J(θ): trajectory (the samples come from μ_θ, not π_θ)."""

    def __init__(self, policy: SeqPolicy, scale: float, generator: torch.Generator,
                 df: int | None = None):
        if not isinstance(policy, SeqPolicy):
            raise ValueError(f"policy: expected a SeqPolicy, got {type(policy).__name__}")
        self.base = policy
        self.space = policy.space
        self.n_params = policy.n_params
        self.scale = check_positive(scale, "scale", allow_zero=True)
        check_generator(generator)
        self._codes = TabularPolicy(policy.space)
        shape = (policy.space.X, self._codes.n_prefixes, policy.space.V)
        z = torch.randn(shape, generator=generator, dtype=torch.float64,
                        device=generator.device)
        if df is not None:   # Student-t: z / sqrt(χ²_df / df), χ² a sum of df squared normals
            df = check_positive_int(df, "df")
            chi2 = torch.randn((*shape, df), generator=generator, dtype=torch.float64,
                               device=generator.device).pow(2).mean(-1)
            z = z / chi2.sqrt()
        self.table = z

    def logits(self, theta: Tensor, x: Tensor, tokens: Tensor) -> Tensor:
        base = self.base.logits(theta, x, tokens)
        codes = self._codes.prefix_codes(tokens)
        xi = self.table.to(device=base.device, dtype=base.dtype)[
            x.unsqueeze(-1).expand_as(tokens), codes]
        return base + self.scale * xi

    def __repr__(self) -> str:
        return f"Mismatched({self.base!r}, scale={self.scale:g})"


def _check_sampler(policy: SeqPolicy, sampler: SeqPolicy, name: str = "sampler") -> SeqPolicy:
    """A SeqPolicy on the same space as ``policy``, with the same parameters."""
    if not isinstance(sampler, SeqPolicy):
        raise ValueError(f"{name}: expected a SeqPolicy (e.g. Mismatched(policy, ...)), got "
                         f"{type(sampler).__name__}")
    a, b = policy.space, sampler.space
    if (a.X, a.V, a.T) != (b.X, b.V, b.T) or sampler.n_params != policy.n_params:
        raise ValueError(f"{name}: expected a policy on the same space (X, V, T) = "
                         f"{(a.X, a.V, a.T)} with {policy.n_params} parameters, got "
                         f"{(b.X, b.V, b.T)} with {sampler.n_params}")
    return sampler


def sequence_entropy(policy: SeqPolicy, theta: Tensor, seqs: Sequences | None = None) -> Tensor:
    """H(θ) = −Σ_x ρ(x) Σ_y p_θ(y|x) log p_θ(y|x): the entropy of whole responses (nats),
    averaged over prompts, by enumeration; differentiable. A 0-dim tensor."""
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)
    lp = sequence_logprobs(policy, theta, seqs)
    q = policy.space.rho.to(device=lp.device, dtype=lp.dtype)[seqs.x] * lp.exp()
    return -(q * lp).sum()


def _seq_logp_many(policy: SeqPolicy, thetas: Tensor, seqs: Sequences) -> Tensor:
    """log p_θ(y|x) of every enumerated pair for K parameter vectors, (K, N) (one batched
    pass over all pairs per θ: a loop over the K vectors is faster here than vmap)."""
    idx = seqs.tokens.unsqueeze(-1)
    out = []
    for t in thetas:
        z = policy.logits(t, seqs.x, seqs.tokens)
        lp = torch.log_softmax(z.to(work_dtype(z.dtype)), -1).gather(-1, idx).squeeze(-1)
        out.append((lp * seqs.mask.to(lp.dtype)).sum(-1))
    return torch.stack(out)


def path_stats(policy: SeqPolicy, thetas: Tensor, reward: SeqReward,
               seqs: Sequences | None = None) -> dict:
    """Exact J and response entropy for many parameter vectors at once: ``thetas`` (..., P)
    (e.g. a run's (steps + 1, R, P)) → ``{"J": (...), "entropy": (...)}``, plus
    ``"J_per_prompt"`` (..., X). Not differentiated."""
    seqs = _seqs(policy, seqs)
    check_tensor(thetas, "thetas", floating=True, nonempty=True)
    if thetas.dim() < 1 or thetas.shape[-1] != policy.n_params:
        raise ValueError(f"thetas: expected shape (..., {policy.n_params}), got "
                         f"{tuple(thetas.shape)}")
    check_finite(thetas, "thetas")
    check_same_device(thetas=thetas, space=policy.space.rho)
    _check_reward(reward)
    with torch.no_grad():
        lp = _seq_logp_many(policy, thetas.detach().reshape(-1, thetas.shape[-1]), seqs)
        rho = policy.space.rho.to(device=lp.device, dtype=lp.dtype)
        p = lp.exp()
        R = reward.of(seqs).to(lp.dtype)
        onehot = torch.nn.functional.one_hot(seqs.x, policy.space.X).to(lp.dtype)   # (N, X)
        J_x = (p * R) @ onehot
        out = {"J": J_x @ rho, "entropy": -((p * lp) @ onehot) @ rho, "J_per_prompt": J_x}
    lead = thetas.shape[:-1]
    return {k: v.reshape(tuple(lead) + tuple(v.shape[1:])) for k, v in out.items()}


def token_scores(policy: SeqPolicy, theta: Tensor, seqs: Sequences | None = None) -> Tensor:
    """S[n, t] = ∇_θ log π_θ(y_nt | h_nt) for every enumerated pair and position, (N, T, P)
    (padding positions included: multiply by the mask), by one Jacobian of the token
    log-probs (forward mode: P batched passes)."""
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)      # θ's values are checked before the transform

    def logp(t):   # log_softmax, not the custom-backward token_logprobs: forward-mode ready
        z = policy.logits(t, seqs.x, seqs.tokens)
        return torch.log_softmax(z.to(work_dtype(z.dtype)), -1).gather(
            -1, seqs.tokens.unsqueeze(-1)).squeeze(-1)

    return torch.func.jacfwd(logp)(theta.detach())      # P forward passes, batched


def sample_enumerated(probs: Tensor, rho: Tensor, x_of: Tensor, n_batches: int,
                      prompts_per_batch: int, group_size: int,
                      generator: torch.Generator) -> Tensor:
    """Indices of sampled responses into an enumeration, (M, B) with B = prompts × G in
    contiguous groups: prompts x ~ ρ, then G responses y ~ ``probs`` restricted to x's rows
    (``probs`` (N,) sums to 1 within each prompt; ``x_of`` (N,) the prompt of every row,
    prompt-major with the same number of rows per prompt, as
    :meth:`~pgbook.worlds.seqlm.SeqSpace.enumerate` lists them)."""
    M = check_positive_int(n_batches, "n_batches")
    n = check_positive_int(prompts_per_batch, "prompts_per_batch")
    G = check_positive_int(group_size, "group_size")
    check_tensor(probs, "probs", ndim=1, floating=True)
    check_tensor(rho, "rho", ndim=1, floating=True)
    check_tensor(x_of, "x_of", ndim=1)
    X = rho.shape[0]
    if X == 0 or probs.shape[0] % X or x_of.shape != probs.shape:
        raise ValueError(f"probs and x_of: expected one entry per enumerated response, the same "
                         f"number for each of the {X} prompts, got shapes {tuple(probs.shape)} "
                         f"and {tuple(x_of.shape)}")
    check_same_device(probs=probs, rho=rho, x_of=x_of)
    check_generator(generator, probs.device)
    per = probs.shape[0] // X
    check_index(x_of, "x_of", X)
    if x_of.device.type != "meta" and not bool(
            (x_of == torch.arange(X, device=x_of.device).repeat_interleave(per)).all()):
        raise ValueError("x_of: expected prompt-major rows, the same number per prompt (as "
                         "SeqSpace.enumerate() lists them)")
    check_probs(rho, "rho")
    check_probs(probs.reshape(X, per), "probs")
    table = probs.reshape(X, per).to(torch.float64)
    x = torch.multinomial(rho.to(torch.float64), M * n, replacement=True, generator=generator)
    y = torch.multinomial(table[x], G, replacement=True, generator=generator)     # (M·n, G)
    return (x[:, None] * per + y).reshape(M, n * G)


def batch_updates(policy: SeqPolicy, theta: Tensor, reward: SeqReward, *, loss: str,
                  n_batches: int, prompts_per_batch: int, group_size: int,
                  generator: torch.Generator, aggregation: str = "seq_mean_token_mean",
                  advantage: str = "grpo", trainer_noise: float | Tensor = 0.0,
                  old_theta: Tensor | None = None,
                  sampler: SeqPolicy | None = None, correction: str = "none",
                  correction_max: float | None = 2.0, correction_min: float | None = None,
                  eps_low: float | None = None, eps_high: float | None = None,
                  seqs: Sequences | None = None, **loss_options) -> Tensor:
    """The update −∇_θ L of ``n_batches`` sampled batches at θ, (M, P): each batch B =
    ``prompts_per_batch`` × G responses drawn by enumeration from π_old (the policy at
    ``old_theta``, default θ: the first epoch) or from a ``sampler`` μ_old, with group
    advantages (``advantage``), the registered ``loss`` and ``aggregation`` through
    :func:`pgbook.methods.policy_loss` (and a sampler ``correction``), and
    ``trainer_noise`` s (a number, or one per batch (M,)): N(0, s²) added to every trainer
    log-prob value, old and current independently (a router's jitter).

    Exact in everything but the sampling: each batch differentiates its own copy of θ, all
    M in one vmapped forward and backward pass (a loss that reads values, like Clip-Cov, is
    not supported here). Compare the rows with
    :func:`pgbook.exact.seqlm.exact_gradient` (e.g. their cosine)."""
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)
    _check_reward(reward)
    if old_theta is not None:
        _check_policy(policy, old_theta, "old_theta")
    if sampler is not None:
        _check_sampler(policy, sampler)
    check_generator(generator, theta.device)
    th = theta.detach()
    M = check_positive_int(n_batches, "n_batches")
    s = torch.as_tensor(trainer_noise, dtype=th.dtype, device=th.device).reshape(-1)
    if s.shape[0] not in (1, M) or not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError(f"trainer_noise: expected a number ≥ 0 or one per batch ({M}), got "
                         f"{trainer_noise!r}")
    with torch.no_grad():
        th_old = th if old_theta is None else old_theta.detach()
        old_all = policy.token_logprobs(th_old, seqs.x, seqs.tokens)
        roller = policy if sampler is None else sampler
        smp_all = roller.token_logprobs(th_old, seqs.x, seqs.tokens)
        probs = (smp_all * seqs.mask).sum(-1).exp()
        rho = policy.space.rho.to(device=th.device)
        idx = sample_enumerated(probs, rho, seqs.x, M, prompts_per_batch, group_size, generator)
        B = idx.shape[1]
        m = seqs.mask[idx]
        R = reward.of(seqs).to(th.dtype)[idx]
        A = compute_advantages(R.reshape(-1), advantage, group_size=group_size).view(M, B)
        A_tok = A.unsqueeze(-1) * m
        noise = torch.randn((2, M, B, seqs.tokens.shape[-1]), generator=generator,
                            dtype=th.dtype, device=th.device) * s.view(-1, 1, 1) * m
        old = old_all[idx] + noise[1]
        smp = smp_all[idx] * m
    kw = dict(loss_options)
    if sampler is not None:
        kw.update(correction=correction, correction_max=correction_max,
                  correction_min=correction_min)

    def one(t, x_b, tok_b, n_b, old_b, a_b, m_b, s_b):
        lp_b = policy.token_logprobs(t, x_b, tok_b) + n_b
        extra = dict(kw, sampler_logp=s_b) if sampler is not None else kw
        value, _ = _methods.policy_loss(lp_b, old_b, a_b, m_b, loss=loss,
                                        aggregation=aggregation, eps_low=eps_low,
                                        eps_high=eps_high, max_tokens=policy.space.T, **extra)
        return value

    thetas = th.expand(M, -1).clone().requires_grad_(True)
    values = torch.func.vmap(one)(thetas, seqs.x[idx], seqs.tokens[idx], noise[0], old, A_tok,
                                  m, smp)
    (g,) = torch.autograd.grad(values.sum(), thetas)
    return -g


def corrected_gradient(policy: SeqPolicy, theta: Tensor, reward: SeqReward, sampler: SeqPolicy,
                       correction: str = "none", correction_max: float | None = 2.0,
                       correction_min: float | None = None, seqs: Sequences | None = None,
                       grad: Tensor | None = None) -> dict:
    """The exact expected update of the token-level estimator on responses from a sampler μ
    (the same θ, computed differently), with a mismatch correction:

        g = E_{x~ρ, y~μ}[ Σ_t m_t w_t(x, y) · (R(x, y) − b(x)) · ∇log π_θ(y_t|h_t) ],
        b(x) = E_{y~μ}[R | x]  (the baseline a group mean estimates),

    with w the weights of ``correction`` (:mod:`pgbook.trajectory.corrections`; ρ_t =
    π_θ(y_t|h_t)/μ(y_t|h_t)). With "sequence_truncate" and no bound reached this is ∇J
    exactly (importance sampling of whole responses); "none" is the uncorrected,
    silently off-policy update. Returns ``{"update": (P,), "grad": ∇J (P,), "ess": the
    effective sample size per response of the weights, E_μ[w̄]² / E_μ[w̄²] with w̄ the mean
    of a response's token weights (1 for w ≡ 1), "kl": KL(μ‖π) of whole responses}``;
    ``grad`` reuses a ∇J already computed."""
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)
    _check_reward(reward)
    _check_sampler(policy, sampler)
    if grad is not None:
        check_shape(grad, "grad", (policy.n_params,))
        check_finite(grad, "grad")
    th = theta.detach()
    wd = work_dtype(th.dtype)
    with torch.no_grad():
        m = seqs.mask.to(wd)
        lp = policy.token_logprobs(th, seqs.x, seqs.tokens).to(wd)
        mu = sampler.token_logprobs(th, seqs.x, seqs.tokens).to(wd)
        q = policy.space.rho.to(device=th.device, dtype=wd)[seqs.x] * \
            (mu * m).sum(-1).exp()                                                 # (N,) joint μ
        R = reward.of(seqs).to(wd)
        X = policy.space.X
        onehot = torch.nn.functional.one_hot(seqs.x, X).to(wd)
        b = ((q * R) @ onehot) / (q @ onehot)
        adv = R - b[seqs.x]
        w = correction_weights(lp, mu, m, correction, correction_max, correction_min)
        wbar = (w * m).sum(-1) / m.sum(-1)
        ess = (q @ wbar) ** 2 / (q @ wbar.pow(2))
        kl = q @ ((mu - lp) * m).sum(-1)
    coef = (q * adv).unsqueeze(-1) * w * m                                          # (N, T)
    t = th.clone().requires_grad_(True)
    with torch.enable_grad():
        (update,) = torch.autograd.grad(
            (coef * policy.token_logprobs(t, seqs.x, seqs.tokens)).sum(), t)
    grad = exact_gradient(policy, th, reward, seqs) if grad is None else grad
    return {"update": update, "grad": grad, "ess": ess, "kl": kl}
