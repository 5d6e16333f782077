"""Exact analysis on the enumerable tiny LM (:mod:`pgbook.worlds.seqlm`).

Every response of a :class:`~pgbook.worlds.seqlm.SeqSpace` can be listed, so

    J(θ) = Σ_x ρ(x) Σ_y p_θ(y|x) R(x, y),      p_θ(y|x) = Π_t π_θ(y_t|h_t),

is a finite, differentiable sum, and so are KLs between two policies over whole responses
and the mean and covariance of any token-level estimator ĝ = Σ_t m_t w_t ∇log π_θ(y_t|h_t)
(chapters 09–17). The token-level estimator is the trajectory side (a sum of per-token
scores); its weights w_t (the sequence reward broadcast to tokens, or the reward-to-go)
are the reward side.

Shapes: N enumerated (or sampled) pairs, T positions, θ (P,). Functions default to the
full enumeration (``seqs=None``) and run on the device and dtype of θ.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_finite_where,
    check_mask,
    check_option,
    check_positive_int,
    check_same_device,
    check_shape,
    check_tensor,
)
from ..reward.advantages import reward_to_go
from ..trajectory.losses import token_pg_loss
from ..trajectory.tokens import sequence_logprob
from ..worlds.seqlm import SeqPolicy, SeqReward, Sequences
from .stats import estimates_from_loss

__all__ = [
    "WEIGHTINGS",
    "exact_J",
    "exact_estimator_mean",
    "exact_estimator_moments",
    "exact_expectation",
    "exact_expected_gradient",
    "exact_forward_kl",
    "exact_gradient",
    "exact_kl",
    "exact_total_variance",
    "joint_probs",
    "per_sequence_estimates",
    "policy_gradient_estimates",
    "reward_weights",
    "sequence_logprobs",
    "sequence_probs",
    "token_pg_surrogate",
]


# -- exact quantities by enumeration ----------------------------------------------------------
def _check_policy(policy: SeqPolicy, theta: Tensor, name: str = "theta") -> None:
    """A SeqPolicy and a finite (P,) θ on its space's device."""
    if not isinstance(policy, SeqPolicy):
        raise ValueError(f"policy: expected a SeqPolicy, got {type(policy).__name__}")
    check_shape(theta, name, (policy.n_params,))
    check_tensor(theta, name, floating=True)
    check_finite(theta, name)
    check_same_device(**{name: theta}, space=policy.space.rho)


def _seqs(policy: SeqPolicy, seqs: Sequences | None) -> Sequences:
    """The enumeration (default), or ``seqs`` checked against the policy's space (ids in
    range, shapes, a 0/1 mask): checked here, before any ``torch.func`` transform."""
    if not isinstance(policy, SeqPolicy):
        raise ValueError(f"policy: expected a SeqPolicy, got {type(policy).__name__}")
    if seqs is None:
        return policy.space.enumerate()
    if not isinstance(seqs, Sequences):
        raise ValueError(f"seqs: expected a Sequences batch (or None for the enumeration), got "
                         f"{type(seqs).__name__}")
    policy.space.check(seqs.x, seqs.tokens, seqs.mask)
    return seqs


def _check_weights(weights: Tensor, mask: Tensor, seqs: Sequences) -> None:
    check_shape(weights, "weights", tuple(seqs.tokens.shape))
    check_tensor(weights, "weights", floating=True)
    check_shape(mask, "mask", tuple(seqs.tokens.shape))
    check_same_device(weights=weights, mask=mask, tokens=seqs.tokens)
    check_mask(mask, "mask")
    check_finite_where(weights, mask, "weights")


def _check_reward(reward: SeqReward) -> SeqReward:
    if not isinstance(reward, SeqReward):
        raise ValueError(f"reward: expected a SeqReward, got {type(reward).__name__}")
    return reward


def _check_ref(policy: SeqPolicy, ref_policy: SeqPolicy | None, ref_theta: Tensor) -> SeqPolicy:
    ref = policy if ref_policy is None else ref_policy
    if not isinstance(ref, SeqPolicy):
        raise ValueError(f"ref_policy: expected a SeqPolicy, got {type(ref).__name__}")
    a, b = policy.space, ref.space
    if (a.X, a.V, a.T) != (b.X, b.V, b.T):
        raise ValueError(f"ref_policy: expected a policy on the same space (X, V, T) = "
                         f"{(a.X, a.V, a.T)}, got {(b.X, b.V, b.T)}")
    _check_policy(ref, ref_theta, "ref_theta")
    return ref


def sequence_logprobs(policy: SeqPolicy, theta: Tensor, seqs: Sequences | None = None) -> Tensor:
    """log p_θ(y|x) = Σ_t m_t log π_θ(y_t|h_t) for every pair of ``seqs`` (default: all of
    them), (N,); differentiable (:func:`pgbook.trajectory.tokens.sequence_logprob`)."""
    seqs = _seqs(policy, seqs)
    return sequence_logprob(policy.token_logprobs(theta, seqs.x, seqs.tokens), seqs.mask)


def sequence_probs(policy: SeqPolicy, theta: Tensor, seqs: Sequences | None = None) -> Tensor:
    """p_θ(y|x) = Π_t π_θ(y_t|h_t) (over the response), (N,); differentiable."""
    return sequence_logprobs(policy, theta, seqs).exp()


def joint_probs(policy: SeqPolicy, theta: Tensor, seqs: Sequences | None = None) -> Tensor:
    """q(x, y) = ρ(x) p_θ(y|x), (N,): the probability of each enumerated pair."""
    seqs = _seqs(policy, seqs)
    lp = sequence_logprobs(policy, theta, seqs)
    return policy.space.rho.to(device=lp.device, dtype=lp.dtype)[seqs.x] * lp.exp()


def exact_expectation(policy: SeqPolicy, theta: Tensor, values: Tensor,
                      seqs: Sequences | None = None) -> Tensor:
    """E_{x~ρ, y~π_θ}[f(x, y)] = Σ_n ρ(x_n) p_θ(y_n|x_n) f_n over the enumeration.

    ``values`` (N, ...) holds f on every enumerated pair; differentiable in θ (and in
    ``values`` if they depend on θ). Returns shape ``values.shape[1:]``.
    """
    seqs = _seqs(policy, seqs)
    check_tensor(values, "values")
    if values.dtype == torch.bool or values.is_complex():
        raise ValueError(f"values: expected real numbers (a floating or integer tensor), got "
                         f"dtype {values.dtype}")
    check_finite(values, "values")
    if values.dim() < 1 or values.shape[:1] != (len(seqs),):
        raise ValueError(f"values: expected a leading dimension of {len(seqs)} (one per "
                         f"enumerated pair), got shape {tuple(values.shape)}")
    q = joint_probs(policy, theta, seqs)
    return torch.tensordot(q, values.to(q.dtype), dims=1)


def exact_J(policy: SeqPolicy, theta: Tensor, reward: SeqReward,
            seqs: Sequences | None = None) -> Tensor:
    """J(θ) = Σ_x ρ(x) Σ_y p_θ(y|x) R(x, y), by enumerating every response; differentiable."""
    _check_policy(policy, theta)
    _check_reward(reward)
    seqs = _seqs(policy, seqs)
    return exact_expectation(policy, theta, reward.of(seqs).to(theta.dtype), seqs)


def exact_gradient(policy: SeqPolicy, theta: Tensor, reward: SeqReward,
                   seqs: Sequences | None = None) -> Tensor:
    """∇J(θ), (P,), by autograd through the enumerated sum."""
    _check_policy(policy, theta)
    _check_reward(reward)
    seqs = _seqs(policy, seqs)
    t = theta.detach().requires_grad_(True)    # torch.autograd, not torch.func.grad: the
    with torch.enable_grad():                  # latter imports torch._dynamo (seconds)
        (g,) = torch.autograd.grad(exact_J(policy, t, reward, seqs), t)
    return g


def exact_kl(policy: SeqPolicy, theta: Tensor, ref_theta: Tensor, ref_policy: SeqPolicy | None = None,
             seqs: Sequences | None = None) -> Tensor:
    """Reverse KL over whole responses, averaged over prompts:

        KL(π_θ ‖ π_ref) = Σ_x ρ(x) Σ_y p_θ(y|x) [log p_θ(y|x) − log p_ref(y|x)].

    Differentiable in θ (the reference is held fixed). ``ref_policy`` defaults to ``policy``.
    """
    seqs = _seqs(policy, seqs)
    ref = _check_ref(policy, ref_policy, ref_theta)
    lp = sequence_logprobs(policy, theta, seqs)
    lr = sequence_logprobs(ref, ref_theta.detach(), seqs).to(lp.dtype)
    return exact_expectation(policy, theta, lp - lr, seqs)


def exact_forward_kl(policy: SeqPolicy, theta: Tensor, ref_theta: Tensor,
                     ref_policy: SeqPolicy | None = None, seqs: Sequences | None = None) -> Tensor:
    """Forward KL over whole responses: KL(π_ref ‖ π_θ) = Σ_x ρ Σ_y p_ref [log p_ref − log p_θ].

    Differentiable in θ (the expectation is under the fixed reference).

    Beware, for chapter 12: k3 summed over tokens and used as a loss on samples from π_θ
    has expected gradient ∇ E_{y~π_θ}[Σ_t KL(π_ref(·|h_t) ‖ π_θ(·|h_t))] (per-token forward
    KLs on prefixes drawn from π_θ), which is *not* ∇ of this sequence-level forward KL once
    T > 1 (prefixes drawn from π_ref); the two coincide for a single token.
    """
    seqs = _seqs(policy, seqs)
    ref = _check_ref(policy, ref_policy, ref_theta)
    lp = sequence_logprobs(policy, theta, seqs)
    with torch.no_grad():
        lr = sequence_logprobs(ref, ref_theta.detach(), seqs).to(lp.dtype)
        q_ref = ref.space.rho.to(lp.dtype)[seqs.x] * lr.exp()
    return (q_ref * (lr - lp)).sum()


# -- the token-level score-function estimator -------------------------------------------------
WEIGHTINGS = ("sequence", "reward_to_go")


def reward_weights(reward: SeqReward, seqs: Sequences, weighting: str = "sequence") -> Tensor:
    """Per-token weights w_t, (*B, T), for the token-level estimator:

    * ``"sequence"``: w_t = R(x, y) at *every* position (broadcast, padding included, the
      way a sequence-level advantage is broadcast to tokens: the loss applies the mask);
    * ``"reward_to_go"``: w_t = G_t = Σ_{t'≥t} r_t' (zero on padding).
    """
    check_option(weighting, "weighting", WEIGHTINGS)
    _check_reward(reward)
    if not isinstance(seqs, Sequences):
        raise ValueError(f"seqs: expected a Sequences batch, got {type(seqs).__name__}")
    if weighting == "sequence":
        R = reward.of(seqs)
        return R.unsqueeze(-1).expand_as(seqs.mask)
    if weighting == "reward_to_go":
        return reward_to_go(reward.token_rewards(seqs.x, seqs.tokens, seqs.mask), seqs.mask)
    raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")


def token_pg_surrogate(policy: SeqPolicy, theta: Tensor, seqs: Sequences, weights: Tensor,
                       mask: Tensor | None = None) -> Tensor:
    """:func:`token_pg_loss` with the log-probs recomputed from θ; ``mask`` defaults to the
    response mask (pass ``torch.ones_like(seqs.mask)`` to let the padding into the loss)."""
    seqs = _seqs(policy, seqs)
    m = seqs.mask if mask is None else mask
    _check_weights(weights, m, seqs)
    return token_pg_loss(policy.token_logprobs(theta, seqs.x, seqs.tokens), weights, m)


def per_sequence_estimates(policy: SeqPolicy, theta: Tensor, seqs: Sequences, weights: Tensor,
                           mask: Tensor | None = None) -> Tensor:
    """g_n = Σ_t m_nt w_nt ∇_θ log π_θ(y_nt|h_nt) for every pair, (N, P).

    Per-sample gradients with ``vmap(grad)``: one small graph per response, no loop. The
    ids, the mask and the weights are checked before the transform."""
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)
    m = seqs.mask if mask is None else mask
    _check_weights(weights, m, seqs)

    def one(t, x, tok, mk, w):
        lp = policy.token_logprobs(t, x, tok)
        return (mk.to(lp.dtype) * w.to(lp.dtype) * lp).sum()

    return torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0, 0, 0))(
        theta.detach(), seqs.x, seqs.tokens, m, weights.detach())


def exact_expected_gradient(policy: SeqPolicy, theta: Tensor,
                            per_sequence_loss: Callable[[Tensor, Sequences], Tensor],
                            seqs: Sequences | None = None) -> Tensor:
    """E_{x~ρ, y~π_θ}[∇_θ ℓ_θ(x, y)] exactly, (P,): the expected gradient of a per-response
    loss on on-policy samples, = ∇_θ Σ_n sg(ρ(x_n) p_θ(y_n|x_n)) ℓ_θ(n) (one backward pass).

    ``per_sequence_loss(theta, seqs) -> (N,)`` is the loss of each enumerated response
    (e.g. a surrogate, or a KL estimator summed over tokens, chapter 12). The sampling
    distribution is held fixed: this is what a sampled loss's gradient estimates.
    """
    if not callable(per_sequence_loss):
        raise ValueError(f"per_sequence_loss: expected a callable (theta, seqs) -> (N,), got "
                         f"{type(per_sequence_loss).__name__}")
    _check_policy(policy, theta)
    seqs = _seqs(policy, seqs)
    with torch.no_grad():
        q = joint_probs(policy, theta, seqs)

    def f(t):
        loss = per_sequence_loss(t, seqs)
        check_shape(loss, "per_sequence_loss(theta, seqs)", (len(seqs),))
        return (q.to(loss.dtype) * loss).sum()

    return torch.func.grad(f)(theta.detach())


def exact_estimator_mean(policy: SeqPolicy, theta: Tensor, weights: Tensor,
                         seqs: Sequences | None = None, mask: Tensor | None = None) -> Tensor:
    """E[ĝ] = Σ_n ρ(x_n) p_θ(y_n|x_n) Σ_t m_nt w_nt ∇log π_θ(y_nt|h_nt) exactly, (P,).

    Equals ∇J when the estimator is unbiased. ``weights`` and ``mask`` are (N, T) over the
    enumeration (``mask`` defaults to the response mask)."""
    seqs = _seqs(policy, seqs)
    m = seqs.mask if mask is None else mask
    _check_weights(weights, m, seqs)

    def gain(t, sq):
        lp = policy.token_logprobs(t, sq.x, sq.tokens)
        return (m.to(lp.dtype) * weights.detach().to(lp.dtype) * lp).sum(-1)

    return exact_expected_gradient(policy, theta, gain, seqs)


def _estimates_and_probs(policy, theta, weights, seqs, mask) -> tuple[Tensor, Tensor]:
    seqs = _seqs(policy, seqs)
    g = per_sequence_estimates(policy, theta, seqs, weights, mask)
    with torch.no_grad():
        q = joint_probs(policy, theta, seqs).to(g.dtype)
    return g, q


def exact_estimator_moments(policy: SeqPolicy, theta: Tensor, weights: Tensor,
                            seqs: Sequences | None = None, mask: Tensor | None = None
                            ) -> tuple[Tensor, Tensor]:
    """Exact mean (P,) and covariance (P, P) of the single-response estimator g(x, y) under
    x ~ ρ, y ~ π_θ(·|x), by enumeration. A B-response average has covariance / B."""
    g, q = _estimates_and_probs(policy, theta, weights, seqs, mask)
    mean = q @ g
    return mean, (g * q[:, None]).T @ g - torch.outer(mean, mean)


def exact_total_variance(policy: SeqPolicy, theta: Tensor, weights: Tensor,
                         seqs: Sequences | None = None, mask: Tensor | None = None,
                         n_samples: int = 1) -> Tensor:
    """tr Cov[ĝ] of the ``n_samples``-response estimator: (E‖g‖² − ‖E g‖²) / B, exactly."""
    check_positive_int(n_samples, "n_samples")
    g, q = _estimates_and_probs(policy, theta, weights, seqs, mask)
    mean = q @ g
    return (q @ g.pow(2).sum(-1) - mean.pow(2).sum()) / n_samples


def policy_gradient_estimates(policy: SeqPolicy, theta: Tensor, reward: SeqReward, n_samples: int,
                              n_estimates: int, generator: torch.Generator,
                              weighting: str = "sequence", mask_padding: bool = True) -> Tensor:
    """M = ``n_estimates`` independent B-response token-level estimates of ∇J, (M, P).

    Samples M·B responses (prompts from ρ) in one batch, weights them with ``weighting``
    (see :func:`reward_weights`) and differentiates :func:`token_pg_loss` on each group of B
    with ``torch.func.vmap``. ``mask_padding=False`` lets padding tokens into the loss (the
    bug chapter 09 shows to be biased).
    """
    B = check_positive_int(n_samples, "n_samples")
    M = check_positive_int(n_estimates, "n_estimates")
    check_option(weighting, "weighting", WEIGHTINGS)
    _check_policy(policy, theta)
    _check_reward(reward)
    if not isinstance(mask_padding, bool):
        raise ValueError(f"mask_padding: expected True or False, got {mask_padding!r}")
    theta = theta.detach()
    seqs = policy.sample(theta, B * M, generator)
    w = reward_weights(reward, seqs, weighting).to(theta.dtype)
    m = seqs.mask if mask_padding else torch.ones_like(seqs.mask)
    T = policy.space.T

    def loss(t, batch):
        x, tok, mk, wt = batch
        return token_pg_loss(policy.token_logprobs(t, x, tok), wt, mk)

    batches = (seqs.x.view(M, B), seqs.tokens.view(M, B, T), m.reshape(M, B, T), w.reshape(M, B, T))
    return estimates_from_loss(loss, theta, batches)
