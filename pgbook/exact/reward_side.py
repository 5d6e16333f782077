"""Exact analysis of the reward side after GRPO (chapter 13) on the enumerable LM.

One update of a group method samples G responses per prompt, computes advantages Â_i from
the group's rewards and aggregates the per-token terms −Â_i log π_θ(y_{i,t}|h_{i,t}) into a
loss (:mod:`pgbook.aggregation`). Its expected ascent direction E[−∇L] is always of the form

    E[−∇L] = Σ_x ρ(x) Σ_y p_θ(y|x) w(y) ∇log p_θ(y|x),

a score-function gradient with a per-response weight w(y) that folds together the
reward, the baseline, the normaliser and the loss mask. :func:`group_update_weights`
computes w exactly, :func:`exact_group_update` the expected update. Two routes:

* **mean-type baselines** ("grpo_mean", "rloo", "plain") with a per-sequence normaliser
  c(y) ("seq_mean_token_mean": 1/L(y), "seq_mean_token_sum": 1, "constant": 1/L_max), for
  any rewards: with Â_i = a R_i − b Σ_{j≠i} R_j,
  w(y) = (a R(y) − b (G−1) J_x) c(y) m(y), J_x = E[R | x] (the group's mean includes the
  response itself; its expected effect is this closed form);
* **any registered group advantage**, for 0/1 rewards: condition on the number K of correct
  responses in the group (K ~ Bin(G, p_x)); every right response then gets Â⁺(K), every
  wrong one Â⁻(K). This also handles DAPO's "token_mean", whose normaliser Σ_j L_j holds
  the response's own length and those of the rest of the batch: the distribution of the
  others' total length given K is a convolution of the length distributions of right and
  wrong responses (by FFT), and w(y) carries E[1/(L(y) + S)] over it.

The other tools: the greedy response of each prompt (ReMax's baseline), the value of every
prefix V(h_t) = E[R | h_t] (process rewards), per-token score vectors, the pass@k objective,
and Monte-Carlo group estimates that draw responses from the enumeration (so that any
estimator, batch-wide ones included, is measured against the exact ∇J).

Shapes: N enumerated (prompt, response) pairs in the prompt-major order of
:meth:`pgbook.worlds.seqlm.SeqSpace.enumerate`, T positions, θ (P,). Everything runs on the
device and dtype of θ.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_generator,
    check_in_range,
    check_mask,
    check_options,
    check_positive,
    check_positive_int,
    check_same_device,
    check_shape,
    check_tensor,
)
from ..registry import get, resolve
from ..worlds.seqlm import SeqPolicy, Sequences, TabularPolicy
from .seqlm import (
    _check_policy,
    _seqs,
    exact_expected_gradient,
    per_sequence_estimates,
    sequence_logprobs,
)

__all__ = [
    "AGGREGATIONS",
    "exact_group_training",
    "exact_group_update",
    "greedy_responses",
    "group_update_weights",
    "pass_at_k",
    "pass_at_k_weight",
    "prefix_ids",
    "prefix_values",
    "sampled_group_estimates",
    "token_scores",
]

AGGREGATIONS = ("seq_mean_token_mean", "seq_mean_token_sum", "constant", "token_mean")
# Â_i = a R_i − b Σ_{j≠i} R_j for the library's mean-type group advantages
_LINEAR = {"grpo_mean": lambda G: (1 - 1 / G, 1 / G), "rloo": lambda G: (1.0, 1 / (G - 1)),
           "plain": lambda G: (1.0, 0.0)}


def _per_prompt(policy: SeqPolicy, seqs: Sequences, values: Tensor) -> Tensor:
    """values (N,) in prompt-major order → (X, n_per_context), checking the layout."""
    sp = policy.space
    n = sp.n_per_context
    if len(seqs) != sp.X * n or not bool((seqs.x == torch.arange(sp.X, device=seqs.x.device)
                                          .repeat_interleave(n)).all()):
        raise ValueError("seqs: expected the full enumeration of the space, prompt-major "
                         "(space.enumerate())")
    return values.view(sp.X, n)


def _binomial(p: Tensor, G: int) -> Tensor:
    """P(K = k), k = 0 … G, for K ~ Bin(G, p): (X,) → (X, G + 1)."""
    K = torch.arange(G + 1, dtype=p.dtype, device=p.device)
    logc = (torch.lgamma(torch.tensor(G + 1.0, dtype=p.dtype, device=p.device))
            - torch.lgamma(K + 1) - torch.lgamma(G - K + 1))
    x = p[:, None]
    return torch.exp(logc + torch.xlogy(K, x) + torch.xlogy(G - K, 1 - x))


def _cpow(F: Tensor, c: int) -> Tensor:
    """F**c for a complex tensor and an integer c ≥ 0 (0**0 = 1, no log of 0)."""
    if c == 0:
        return torch.ones_like(F)
    return torch.polar(F.abs() ** c, F.angle() * c)


def _conv_powers(f1: Tensor, f0: Tensor, f: Tensor, a: Tensor, b: Tensor, c: int) -> Tensor:
    """Distributions of S = (a draws from f1) + (b from f0) + (c from f), one row per entry
    of the integer count vectors a, b (M,), by FFT: (M, n) over totals 0 … n − 1."""
    T1 = f1.shape[0] - 1
    a, b = a.long(), b.long()
    top = int(max(a.max(), b.max()))
    n = (int(a.max()) + int(b.max()) + c) * T1 + 1
    F1, F0, F = (torch.fft.rfft(v, n) for v in (f1, f0, f))

    def table(Fv):                                   # [F^0, F^1, …, F^top]
        rows = torch.cat([torch.ones_like(Fv)[None], Fv[None].expand(top, -1)], 0)
        return torch.cumprod(rows, 0)

    spec = table(F1)[a] * table(F0)[b] * _cpow(F, c)[None]
    return torch.fft.irfft(spec, n).clamp_min(0)


_CLASS_CACHE: dict = {}


def _class_advantages(fn, name: str, G: int, dtype, device, options: dict):
    """Â⁺(K) and Â⁻(K), K = 0 … G: the advantage of a right and of a wrong response in a
    group with K right ones (0 where there is none), from the estimator itself."""
    key = (fn, G, dtype, str(device), tuple(sorted(options.items())))
    if key not in _CLASS_CACHE:
        if "mask" in inspect.signature(fn).parameters:
            raise ValueError(f"advantage: {name!r} reads the responses' lengths, so its "
                             f"advantages are not a function of K alone")
        K = torch.arange(G + 1, dtype=dtype, device=device)
        groups = (torch.arange(G, dtype=dtype, device=device)[None] < K[:, None]).to(dtype)
        adv = fn(groups.reshape(-1), G, **options).to(dtype).view(G + 1, G)
        if len(_CLASS_CACHE) > 64:
            _CLASS_CACHE.clear()
        _CLASS_CACHE[key] = (torch.where(K > 0, adv[:, 0], torch.zeros_like(K)),
                             torch.where(K < G, adv[:, -1], torch.zeros_like(K)))
    return _CLASS_CACHE[key]


def group_update_weights(policy: SeqPolicy, theta: Tensor, rewards: Tensor, group_size: int, *,
                         advantage: str = "grpo_mean",
                         aggregation: str = "seq_mean_token_mean",
                         max_tokens: int | None = None, loss_mask: Tensor | None = None,
                         n_groups: int = 1, seqs: Sequences | None = None,
                         **options) -> Tensor:
    """The per-response weight w(y) of one group update's expected ascent direction, (N,).

    E[−∇L] = Σ_n ρ(x_n) p_θ(y_n|x_n) w_n ∇log p_θ(y_n|x_n) for a batch of ``n_groups``
    groups of G = ``group_size`` responses (prompts x ~ ρ), advantages ``advantage`` (a
    registered group estimator, ``**options`` passed to it) and the aggregation
    ``aggregation`` (one of :data:`AGGREGATIONS`; ``max_tokens`` = L_max for "constant",
    default T). ``rewards`` (N,) holds R on every enumerated response (after any shaping);
    ``loss_mask`` (N,) 0/1 says which responses enter the loss (all by default; a masked
    response still counts in its group's baseline and, for the per-sequence normalisers,
    in B, as TRL's ``mask_truncated_completions`` does; "seq_mean_token_mean" takes no
    mask because pgbook drops empty rows from its B). The mean-type estimators
    ("grpo_mean", "rloo", "plain") with a per-sequence normaliser take any rewards; every
    other combination needs 0/1 rewards, and "token_mean" (whose normaliser couples the
    whole batch) a space with one prompt. Computed without gradient, on θ's device/dtype.
    """
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)
    G = check_positive_int(group_size, "group_size")
    M = check_positive_int(n_groups, "n_groups")
    check_options(resolve("advantage", advantage, "group", what="advantage"), options,
                  f"group_update_weights() with advantage {advantage!r}", skip=2)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation: expected one of {AGGREGATIONS}, got {aggregation!r}")
    check_tensor(rewards, "rewards", ndim=1, floating=True)
    check_shape(rewards, "rewards", (len(seqs),))
    check_same_device(rewards=rewards, theta=theta)
    check_finite(rewards, "rewards")
    T = policy.space.T
    L_max = T if max_tokens is None else check_positive_int(max_tokens, "max_tokens")
    with torch.no_grad():
        q = torch.exp(sequence_logprobs(policy, theta.detach(), seqs))    # p(y|x), (N,)
        dt = q.dtype
        R = rewards.to(dt)
        L = seqs.mask.sum(-1).to(dt)
        if int(L.max()) > L_max:
            raise ValueError(f"max_tokens: expected at least the longest response ({int(L.max())}"
                             f" tokens), got {L_max}")
        if loss_mask is None:
            m = torch.ones_like(R)
        else:
            check_shape(loss_mask, "loss_mask", (len(seqs),))
            check_same_device(loss_mask=loss_mask, theta=theta)
            m = loss_mask.to(dt)
            if bool(((m != 0) & (m != 1)).any()):
                raise ValueError("loss_mask: expected 0/1 per response, got other values")
            if aggregation == "seq_mean_token_mean":
                raise ValueError("loss_mask: not supported with 'seq_mean_token_mean' (pgbook "
                                 "drops empty rows from its B); use 'constant', "
                                 "'seq_mean_token_sum' or 'token_mean'")
        c = {"seq_mean_token_mean": 1 / L, "seq_mean_token_sum": torch.ones_like(L),
             "constant": torch.full_like(L, 1.0 / L_max)}.get(aggregation)
        qx = _per_prompt(policy, seqs, q)
        Rx = _per_prompt(policy, seqs, R)
        J = (qx * Rx).sum(1)                                             # J_x (X,)
        xi = seqs.x
        if advantage in _LINEAR and c is not None and not options:
            if advantage == "rloo" and G < 2:
                raise ValueError(f"group_size: RLOO needs at least 2 responses, got {G}")
            a, b = _LINEAR[advantage](G)
            return (a * R - b * (G - 1) * J[xi]) * c * m
        # 0/1 rewards: condition on the number of correct responses in the group
        if bool(((R != 0) & (R != 1)).any()):
            raise ValueError(f"rewards: expected 0/1 rewards for advantage {advantage!r} with "
                             f"aggregation {aggregation!r} (only the mean-type baselines with a "
                             f"per-sequence normaliser take any rewards)")
        fn = resolve("advantage", advantage, "group", what="advantage")
        K = torch.arange(G + 1, dtype=dt, device=q.device)
        a_pos, a_neg = _class_advantages(fn, advantage, G, dt, q.device, options)
        pk = _binomial(J.clamp(0, 1), G)                                 # (X, G + 1)
        pos = torch.where(J > 0, 1 / J.clamp_min(1e-300), torch.zeros_like(J))
        neg = torch.where(J < 1, 1 / (1 - J).clamp_min(1e-300), torch.zeros_like(J))
        if c is not None:
            A_pos = (pk * K * a_pos).sum(1) * pos                        # (X,)
            A_neg = (pk * (G - K) * a_neg).sum(1) * neg
            return torch.where(R > 0, A_pos[xi], A_neg[xi]) * c * m / G
        # token_mean: E[1/(ℓ(y) + S)] over the other responses' total effective length S
        if policy.space.X != 1:
            raise ValueError("aggregation: 'token_mean' couples the batch through its "
                             "normaliser; the exact weights need a space with one prompt")
        ell = (L * m).long()
        p = J[0]
        f1 = torch.zeros(T + 1, dtype=dt, device=q.device).index_add_(0, ell, q * R)
        f0 = torch.zeros(T + 1, dtype=dt, device=q.device).index_add_(0, ell, q * (1 - R))
        f = f1 + f0
        f1 = f1 / p.clamp_min(1e-300)
        f0 = f0 / (1 - p).clamp_min(1e-300)
        rest = G * (M - 1)
        Kp, Kn = K.clamp_min(1) - 1, G - K                               # right i: K−1, G−K
        S_pos = _conv_powers(f1, f0, f, Kp, Kn, rest)                    # (G + 1, n)
        S_neg = _conv_powers(f1, f0, f, K, (G - K - 1).clamp_min(0), rest)
        lv = torch.arange(T + 1, dtype=dt, device=q.device)

        def inv(S):                                                      # E[1/(l + S)] (·, T+1)
            s = torch.arange(S.shape[1], dtype=dt, device=q.device)
            tot = lv[:, None] + s[None, :]
            r = torch.where(tot > 0, 1 / tot.clamp_min(1), torch.zeros_like(tot))
            return S @ r.T
        h_pos, h_neg = inv(S_pos), inv(S_neg)                            # (G + 1, T + 1)
        w_pos = (pk[0, :, None] * (K * a_pos)[:, None] * h_pos).sum(0) * pos[0]    # (T + 1,)
        w_neg = (pk[0, :, None] * ((G - K) * a_neg)[:, None] * h_neg).sum(0) * neg[0]
        return M * m * torch.where(R > 0, w_pos[ell], w_neg[ell])


def exact_group_update(policy: SeqPolicy, theta: Tensor, rewards: Tensor, group_size: int, *,
                       seqs: Sequences | None = None, weights: Tensor | None = None,
                       **kw) -> Tensor:
    """E[−∇L] of one group update, exactly, (P,): Σ_n ρ p_θ w_n ∇log p_θ(y_n) with w from
    :func:`group_update_weights` (its keyword arguments in ``**kw``), or the given
    ``weights`` (N,). For "plain" or "rloo" with "seq_mean_token_sum" it is ∇J; for
    "grpo_mean" (G − 1)/G ∇J; every other choice is a reweighting of the responses whose
    effect on the policy the chapter traces."""
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)
    if weights is not None and kw:
        raise ValueError(f"weights: given weights replace group_update_weights, whose options "
                         f"{sorted(kw)} would be ignored")
    w = group_update_weights(policy, theta, rewards, group_size, seqs=seqs, **kw) \
        if weights is None else weights
    check_tensor(w, "weights", floating=True)
    check_shape(w, "weights", (len(seqs),))
    check_same_device(weights=w, theta=theta)
    check_finite(w, "weights")
    if isinstance(policy, TabularPolicy) and not theta.requires_grad:
        return _tabular_update(policy, theta, seqs, w)

    def gain(t, sq):
        return w.to(t.dtype) * sequence_logprobs(policy, t, sq)

    return exact_expected_gradient(policy, theta, gain, seqs)


def _tabular_update(policy: TabularPolicy, theta: Tensor, seqs: Sequences, w: Tensor) -> Tensor:
    """Σ_n ρ p w_n ∇log p(y_n) for a table of logits, in closed form: each response adds
    ρ p w (e_{y_t} − π(·|h_t)) to the logits of its prefixes (the same value autograd gives,
    an order of magnitude faster on the tiny tables of the answer world)."""
    sp = policy.space
    with torch.no_grad():
        logits = policy.logits(theta, seqs.x, seqs.tokens)                # (N, T, V)
        logp = torch.log_softmax(logits, -1)
        lp_tok = logp.gather(-1, seqs.tokens[..., None]).squeeze(-1)
        m = seqs.mask.to(logp.dtype)
        q = sp.rho.to(logp.dtype)[seqs.x] * torch.exp((lp_tok * m).sum(-1))
        c = (q * w.to(logp.dtype))[:, None] * m                          # (N, T)
        g = torch.nn.functional.one_hot(seqs.tokens, sp.V).to(logp.dtype) - logp.exp()
        rows = seqs.x[:, None] * policy.n_prefixes + policy.prefix_codes(seqs.tokens)
        out = torch.zeros(sp.X * policy.n_prefixes, sp.V, dtype=logp.dtype, device=logp.device)
        out.index_add_(0, rows.reshape(-1), (c[..., None] * g).reshape(-1, sp.V))
    return out.reshape(-1)


def exact_group_training(policy: SeqPolicy, theta: Tensor,
                         rewards: Tensor | Callable[[Tensor], Tensor], group_size: int, *,
                         steps: int, lr: float, frozen: Tensor | None = None,
                         seqs: Sequences | None = None, **kw) -> Tensor:
    """Train with the *expected* update of a group method: θ_{k+1} = θ_k + η E[−∇L](θ_k),
    deterministic (an infinite batch of groups, one group's normaliser). Returns the path
    (steps + 1, P), θ_0 first.

    ``rewards``: (N,) on the enumeration, or a callable θ → (N,) (for rewards that move with
    the policy); ``frozen`` (P,) bool marks parameters held fixed (e.g. the answer head, to
    watch what an estimator does to everything else); ``**kw`` as
    :func:`group_update_weights` (advantage, aggregation, n_groups, loss_mask, …).
    """
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)
    n = check_positive_int(steps, "steps")
    eta = check_positive(lr, "lr")
    if not callable(rewards):
        check_tensor(rewards, "rewards", ndim=1, floating=True)
    keep = None
    if frozen is not None:
        check_shape(frozen, "frozen", tuple(theta.shape))
        check_mask(frozen, "frozen", allow_all_zero=True)
        check_same_device(frozen=frozen, theta=theta)
        keep = (~frozen.to(torch.bool)).to(theta.dtype)
    path = [theta.detach().clone()]
    for _ in range(n):
        t = path[-1]
        r = rewards(t) if callable(rewards) else rewards
        g = exact_group_update(policy, t, r, group_size, seqs=seqs, **kw)
        path.append(t + eta * (g if keep is None else g * keep))
    return torch.stack(path)


def greedy_responses(policy: SeqPolicy, theta: Tensor, seqs: Sequences | None = None) -> Tensor:
    """Index (into the enumeration) of each prompt's greedy response, (X,) long: the response
    whose every token is the argmax of π_θ(·|h_t) (ReMax's baseline rollout)."""
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)
    with torch.no_grad():
        top = policy.logits(theta.detach(), seqs.x, seqs.tokens).argmax(-1)
        ok = ((top == seqs.tokens) | (seqs.mask == 0)).all(-1)
        okx = _per_prompt(policy, seqs, ok.to(torch.long))
    if not bool((okx.sum(1) == 1).all()):
        raise ValueError("theta: a prompt has tied top tokens, so its greedy response is not "
                         "unique")
    n = policy.space.n_per_context
    return okx.argmax(1) + n * torch.arange(policy.space.X, device=okx.device)


def prefix_ids(policy: SeqPolicy, seqs: Sequences | None = None) -> Tensor:
    """An id for every prefix (x, y_<t) of every enumerated response, t = 0 … T, (N, T + 1)
    long: two entries share an id exactly when they are the same prefix of the same prompt.
    Once a response has ended (t ≥ L) its entries get ids of their own (−1 − n), one per
    response, since the prefix is then the whole response."""
    seqs = _seqs(policy, seqs)
    sp = policy.space
    L = seqs.mask.sum(-1).round().long()
    N = len(seqs)
    out = torch.empty(N, sp.T + 1, dtype=torch.long, device=seqs.x.device)
    key = seqs.x.clone()
    offset = 0
    for t in range(sp.T + 1):
        _, inverse = torch.unique(key, return_inverse=True)
        ended = L <= t
        out[:, t] = torch.where(ended, -1 - torch.arange(N, device=key.device), inverse + offset)
        offset += int(inverse.max()) + 1
        if t < sp.T:
            key = key * sp.V + seqs.tokens[:, t]
    return out


def prefix_values(policy: SeqPolicy, theta: Tensor, rewards: Tensor,
                  seqs: Sequences | None = None) -> Tensor:
    """V(h_t) = E[R | x, y_<t] for every enumerated response and t = 0 … T, (N, T + 1).

    Column 0 is V(x); once the response has ended (t ≥ L) the value is its own reward R.
    A token's *process advantage* V(h_{t+1}) − V(h_t) (an exact process reward) sums over
    the response to R − V(x). Computed by grouping the enumeration by prefix
    (:func:`prefix_ids`)."""
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)
    check_tensor(rewards, "rewards", ndim=1, floating=True)
    check_shape(rewards, "rewards", (len(seqs),))
    check_same_device(rewards=rewards, theta=theta)
    check_finite(rewards, "rewards")
    ids = prefix_ids(policy, seqs)
    with torch.no_grad():
        q = torch.exp(sequence_logprobs(policy, theta.detach(), seqs))
        R = rewards.to(q.dtype)
        live = ids >= 0
        k = torch.where(live, ids, torch.zeros_like(ids))
        n = int(k.max()) + 1
        num = torch.zeros(n, dtype=q.dtype, device=q.device).index_add_(
            0, k[live], (q * R)[:, None].expand_as(ids)[live])
        den = torch.zeros_like(num).index_add_(0, k[live], q[:, None].expand_as(ids)[live])
        v = num[k] / den[k].clamp_min(1e-300)
        return torch.where(live, v, R[:, None].expand_as(v))


def token_scores(policy: SeqPolicy, theta: Tensor, seqs: Sequences | None = None) -> Tensor:
    """∇_θ log π_θ(y_t|h_t) for every enumerated response and position, (N, T, P) (zero on
    the padding): the per-token score vectors that every token-level estimator weights."""
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)
    T = policy.space.T
    eye = torch.eye(T, dtype=theta.dtype, device=theta.device)
    return torch.stack([per_sequence_estimates(policy, theta, seqs, eye[t].expand(len(seqs), T))
                        for t in range(T)], 1)


def pass_at_k(p: Tensor, k: int) -> Tensor:
    """pass@k = 1 − (1 − p)^k for success probabilities ``p`` (any shape)."""
    check_tensor(p, "p", floating=True)
    check_in_range(p, "p", 0.0, 1.0)
    k = check_positive_int(k, "k")
    return 1 - (1 - p).pow(k)


def pass_at_k_weight(p: Tensor, k: int) -> Tensor:
    """d pass@k / dp = k (1 − p)^{k−1}: ∇pass@k = k (1 − p)^{k−1} ∇p per prompt, so pass@k
    training is pass@1 training with each prompt's gradient reweighted by this factor."""
    check_tensor(p, "p", floating=True)
    check_in_range(p, "p", 0.0, 1.0)
    k = check_positive_int(k, "k")
    return k * (1 - p).pow(k - 1)


def sampled_group_estimates(policy: SeqPolicy, theta: Tensor, rewards: Tensor,
                            estimators: Sequence[str | tuple[str, str, dict]], *, n_batches: int, prompts_per_batch: int,
                            group_size: int, generator: torch.Generator,
                            seqs: Sequences | None = None, scores: Tensor | None = None
                            ) -> dict:
    """Monte-Carlo group estimates of the policy gradient, drawn from the enumeration:
    ``{label: (n_batches, P)}``.

    Each of M = ``n_batches`` batches draws ``prompts_per_batch`` prompts x ~ ρ and G =
    ``group_size`` responses y ~ p_θ(·|x) for each (as indices into the enumeration, so the
    score vectors are computed once, :func:`token_scores`, or given as ``scores``), computes
    each estimator's advantages with the library's function on the batch's rewards, and
    returns the "seq_mean_token_sum" estimate (1/B) Σ_i Σ_t Â_{i,t} ∇log π_θ(y_{i,t}|h_{i,t}),
    B = prompts_per_batch · G. ``estimators``: names of registered group or batch advantages,
    or ``(label, name, options)`` triples. An estimator that takes ``mask`` gets the
    responses' masks; one that takes ``reward_baselines`` gets the reward of each prompt's
    greedy response (:func:`greedy_responses`, ReMax). Batch-wide estimators see one batch at
    a time. The same draws serve every estimator (common random numbers).
    """
    seqs = _seqs(policy, seqs)
    _check_policy(policy, theta)
    sp = policy.space
    M = check_positive_int(n_batches, "n_batches")
    K = check_positive_int(prompts_per_batch, "prompts_per_batch")
    G = check_positive_int(group_size, "group_size")
    check_generator(generator, theta.device)
    check_tensor(rewards, "rewards", ndim=1, floating=True)
    check_shape(rewards, "rewards", (len(seqs),))
    check_same_device(rewards=rewards, theta=theta)
    check_finite(rewards, "rewards")
    if isinstance(estimators, str) or not isinstance(estimators, Sequence) or not estimators:
        raise ValueError(f"estimators: expected a non-empty list of advantage names or "
                         f"(label, name, options) triples, got {estimators!r}")
    specs = [(e, e, {}) if isinstance(e, str) else tuple(e) if isinstance(e, (tuple, list))
             else e for e in estimators]
    for e in specs:
        if not (isinstance(e, tuple) and len(e) == 3 and isinstance(e[1], str)
                and isinstance(e[2], dict)):
            raise ValueError(f"estimators: expected an advantage name or a (label, name, "
                             f"options) triple, got {e!r}")
        get("advantage", e[1])                               # a registered advantage
    P = theta.shape[0]
    if scores is None:
        scores = token_scores(policy, theta, seqs)
    check_shape(scores, "scores", (len(seqs), sp.T, P))
    with torch.no_grad():
        q = torch.exp(sequence_logprobs(policy, theta.detach(), seqs))
        qx = _per_prompt(policy, seqs, q)
        n = sp.n_per_context
        x = torch.multinomial(sp.rho.to(q.dtype).expand(M * K, sp.X), 1,
                              generator=generator).view(M, K)
        j = torch.multinomial(qx[x.reshape(-1)], G, replacement=True, generator=generator)
        idx = (x.reshape(-1, 1) * n + j).view(M, K * G)                  # (M, B)
        R = rewards.to(q.dtype)[idx]
        mask = seqs.mask[idx]                                            # (M, B, T)
        greedy_R = rewards.to(q.dtype)[greedy_responses(policy, theta, seqs)]
        scores = scores.to(q.dtype)                    # θ's work dtype (float32 for bfloat16)
        seq_scores = scores.sum(1)                                       # (N, P): masked
        B = K * G
        out = {}
        for label, name, options in specs:
            comp = get("advantage", name)
            fn = resolve("advantage", name, what="estimator")
            if comp.form not in ("group", "batch"):
                raise ValueError(f"estimators: {name!r} is not a group or batch estimator")
            params = inspect.signature(fn).parameters

            def call(r, mk, xs, options=options, fn=fn, params=params):
                extra = dict(options)
                if "mask" in params:
                    extra["mask"] = mk
                if "reward_baselines" in params:
                    extra["reward_baselines"] = greedy_R[xs]
                return fn(r, G, **extra)

            if comp.form == "group":
                adv = call(R.reshape(-1), mask.reshape(M * B, -1), x.reshape(-1)).view(M, B, -1)
            else:                # one batch at a time: vectorised with vmap where it can be
                try:
                    adv = torch.func.vmap(call)(R, mask, x)
                except Exception:  # an estimator with data-dependent Python control flow
                    adv = torch.stack([call(R[i], mask[i], x[i]) for i in range(M)])
            if adv.dim() == 2 or adv.shape[-1] == 1:                     # sequence-level Â_i
                a = adv.reshape(M, B).to(q.dtype)
                est = torch.einsum("mb,mbp->mp", a, seq_scores[idx]) / B
            else:                                                        # token-level Â_{i,t}
                a = adv.to(q.dtype) * mask
                est = torch.cat([torch.einsum("mbt,mbtp->mp", a[i:i + 64], scores[idx[i:i + 64]])
                                 for i in range(0, M, 64)]) / B
            out[label] = est
    return out
