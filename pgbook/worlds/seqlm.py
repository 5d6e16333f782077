"""The enumerable autoregressive tiny LM of Part II: every response can be listed.

A prompt (context) x ~ ρ(x) is one of X ids; a response y = (y_1, …, y_L) is a string of
tokens from a vocabulary of V − 1 content tokens plus EOS, ending at the first EOS or cut at
the maximum length T. The policy is autoregressive,

    π_θ(y | x) = Π_t π_θ(y_t | h_t),      h_t = (x, y_<t),

so the *trajectory factor* of J(θ) is a product over tokens and its log is a sum,

    log p_θ(y | x) = Σ_t m_t log π_θ(y_t | h_t),

with the response mask m_t = 1 up to and including EOS and 0 on the padding after it.
Because V ≤ ~6 and T ≤ 5 there are few enough responses to list them all
(:meth:`SeqSpace.enumerate`), so J(θ) = Σ_x ρ(x) Σ_y p_θ(y | x) R(x, y) is a finite,
differentiable sum: :mod:`pgbook.exact.seqlm` computes it, its gradient, KLs between
policies and the exact moments of token-level estimators.

This module is the world itself: the space of (prompt, response) pairs
(:class:`SeqSpace`, :class:`Sequences`), the policies (:class:`TabularPolicy`,
:class:`MLPPolicy`, :class:`Tempered`) and the rewards (:class:`SeqReward`).

Layout. Token ids are ``0 … V−2`` for content tokens and ``eos_id = V − 1`` for EOS; the
padding after EOS is EOS again (``pad_id = eos_id``), as in many LLM stacks that set
pad = eos. Shapes: ``x`` (*B,), ``tokens`` (*B, T), ``mask`` (*B, T) floating 0/1, token
log-probs (*B, T), logits (*B, T, V), θ a flat vector (P,). Everything runs on the device
and dtype of θ (and of the space's ρ); randomness only through an explicit
``torch.Generator``. Token log-probs and response masks come from
:mod:`pgbook.trajectory.tokens` (log-probs are float32 for bfloat16/float16/float32
parameters, float64 for float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_finite_where,
    check_float_dtype,
    check_generator,
    check_index,
    check_mask,
    check_positive,
    check_positive_int,
    check_probs,
    check_same_device,
    check_shape,
    check_tensor,
    work_dtype,
)
from ..trajectory.tokens import response_mask as _response_mask
from ..trajectory.tokens import token_logprobs

__all__ = [
    "MAX_ENUMERATED",
    "MLPPolicy",
    "SeqPolicy",
    "SeqReward",
    "SeqSpace",
    "Sequences",
    "TabularPolicy",
    "Tempered",
    "contains",
    "equals_target",
    "outcome_reward",
    "token_table_reward",
]

MAX_ENUMERATED = 2_000_000


# -- sequences --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sequences:
    """A batch of (prompt, response) pairs.

    ``x`` (*B,) context ids; ``tokens`` (*B, T) token ids, EOS-padded after the first EOS;
    ``mask`` (*B, T) the response mask (1 up to and including EOS, 0 after; floating);
    ``logp`` (*B, T) the token log-probs recorded when sampling (0 on padding), or None
    for enumerated sequences.
    """

    x: Tensor
    tokens: Tensor
    mask: Tensor
    logp: Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("x", "tokens"):
            t = check_tensor(getattr(self, name), name)
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise ValueError(f"{name}: expected integer ids, got dtype {t.dtype}")
        if self.tokens.dim() < 1 or tuple(self.tokens.shape[:-1]) != tuple(self.x.shape):
            raise ValueError(f"tokens: expected shape {(*self.x.shape, 'T')} (one row per "
                             f"prompt of x), got {tuple(self.tokens.shape)}")
        check_shape(self.mask, "mask", tuple(self.tokens.shape))
        if self.logp is not None:
            check_shape(self.logp, "logp", tuple(self.tokens.shape))
        check_same_device(x=self.x, tokens=self.tokens, mask=self.mask, logp=self.logp)

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def lengths(self) -> Tensor:
        """Response lengths L (*B,), EOS included (a cut response has L = T)."""
        return self.mask.sum(-1).round().long()

    def view(self, *shape: int) -> Sequences:
        """The same pairs with the batch dimensions reshaped, e.g. (M·N,) → (M, N)."""
        try:
            x = self.x.reshape(shape)
        except (RuntimeError, TypeError):
            raise ValueError(f"shape: expected integers with product {self.x.numel()} (the "
                             f"number of pairs; one may be -1), got {shape}") from None
        T = self.tokens.shape[-1]
        return Sequences(x, self.tokens.reshape(*shape, T),
                         self.mask.reshape(*shape, T),
                         None if self.logp is None else self.logp.reshape(*shape, T))


class SeqSpace:
    """The prompts, the vocabulary and the maximum length: the space of (x, y) pairs.

    Args:
        tokens: names of the content tokens (one character each reads best); EOS is
            appended as the last id.
        max_len: T, the maximum response length (EOS counts as a token).
        rho: (X,) distribution ρ(x) over the X prompts (floating; sets device and dtype).
            Default: uniform over 3 prompts, float64 on the CPU.
        contexts: names of the prompts (for printing).
        eos: the printed name of EOS.

    Number of responses per prompt: Σ_{L=1}^{T} (V−1)^{L−1} (those ending with EOS at
    position L) + (V−1)^T (those cut at T without EOS).
    """

    def __init__(self, tokens: Sequence[str] = ("a", "b", "c"), max_len: int = 5,
                 rho: Tensor | None = None, contexts: Sequence[str] | None = None,
                 eos: str = "⏎"):
        tokens = tuple(str(t) for t in tokens)
        if len(tokens) < 1:
            raise ValueError("tokens: expected at least one content token, got none")
        if len(set(tokens)) != len(tokens) or eos in tokens:
            raise ValueError(f"tokens: expected distinct names different from eos {eos!r}, got {tokens}")
        self.T = check_positive_int(max_len, "max_len")
        if rho is None:
            rho = torch.full((3,), 1 / 3, dtype=torch.float64)
        check_tensor(rho, "rho", ndim=1, floating=True, nonempty=True)  # ≥ 1 prompt
        check_probs(rho, "rho")
        self.rho = rho
        self.token_names = (*tokens, eos)
        self.V = len(self.token_names)
        self.eos_id = self.V - 1
        self.pad_id = self.eos_id
        self.X = rho.shape[0]
        self.contexts = tuple(contexts) if contexts is not None else tuple(f"x{i}" for i in range(self.X))
        if len(self.contexts) != self.X:
            raise ValueError(f"contexts: expected {self.X} names (one per entry of rho), got {len(self.contexts)}")
        if self.V ** self.T > MAX_ENUMERATED:
            raise ValueError(f"V**T = {self.V}**{self.T} is too many token grids to enumerate "
                             f"(limit {MAX_ENUMERATED}); use fewer tokens or a shorter max_len")
        self._enum_cpu: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.rho.device

    @property
    def dtype(self) -> torch.dtype:
        return self.rho.dtype

    @property
    def n_per_context(self) -> int:
        """Number of distinct responses per prompt."""
        k = self.V - 1
        return sum(k ** (L - 1) for L in range(1, self.T + 1)) + k ** self.T

    def __repr__(self) -> str:
        return (f"SeqSpace(X={self.X}, V={self.V} ({''.join(self.token_names)}), T={self.T}, "
                f"responses per prompt={self.n_per_context}, device={self.device}, dtype={self.dtype})")

    # -- masks, encoding --------------------------------------------------------------------
    def response_mask(self, tokens: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """m_t = 1 if no EOS occurs before position t (so EOS itself is included), else 0.

        ``tokens`` (*B, T) → mask (*B, T) in ``dtype`` (default: the space's dtype); see
        :func:`pgbook.trajectory.tokens.response_mask`.
        """
        check_tensor(tokens, "tokens")
        if tokens.shape[-1:] != (self.T,):
            raise ValueError(f"tokens: expected shape (..., {self.T}), got {tuple(tokens.shape)}")
        check_index(tokens, "tokens", self.V)
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise ValueError(f"dtype: expected a torch.dtype, got {dtype!r}")
        m = _response_mask(tokens.reshape(-1, self.T), self.eos_id, dtype=dtype or self.dtype)
        return m.reshape(tokens.shape)

    def encode(self, texts: str | Sequence[str]) -> Tensor:
        """Strings (one character per token; EOS implied if shorter than T) → tokens (N, T)."""
        if isinstance(texts, str):
            texts = [texts]
        if not all(isinstance(t, str) for t in texts):
            raise ValueError(f"texts: expected a string or a list of strings, got {texts!r}")
        lookup = {n: i for i, n in enumerate(self.token_names)}
        rows = []
        for s in texts:
            ids = []
            for ch in s:
                if ch not in lookup:
                    raise ValueError(f"texts: unknown token {ch!r} in {s!r}; vocabulary is {self.token_names}")
                ids.append(lookup[ch])
            if self.eos_id in ids:
                ids = ids[: ids.index(self.eos_id) + 1]
            if len(ids) > self.T:
                raise ValueError(f"texts: {s!r} is longer than max_len = {self.T}")
            rows.append(ids + [self.pad_id] * (self.T - len(ids)))
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def decode(self, tokens: Tensor) -> list[str]:
        """tokens (N, T) → strings, cut after the first EOS (EOS printed with its name)."""
        check_tensor(tokens, "tokens", ndim=2)
        mask = self.response_mask(tokens.cpu())
        out = []
        for row, m in zip(tokens.cpu().tolist(), mask.tolist()):
            out.append("".join(self.token_names[t] for t, k in zip(row, m) if k))
        return out

    # -- enumeration --------------------------------------------------------------------------
    def _enumerate_cpu(self) -> Tensor:
        """Every canonical response (n_per_context, T) on the CPU, ordered by length (cut
        responses after those that end with EOS), then lexicographically: all V**T grids,
        keeping those already padded after their first EOS."""
        if self._enum_cpu is None:
            V, T = self.V, self.T
            grid = torch.cartesian_prod(*[torch.arange(V)] * T).reshape(V ** T, T)
            mask = self.response_mask(grid, torch.long)
            canonical = ((mask == 1) | (grid == self.pad_id)).all(-1)
            seqs = grid[canonical]
            lengths = self.response_mask(seqs, torch.long).sum(-1)
            code = (seqs * V ** torch.arange(T - 1, -1, -1)).sum(-1)
            cut = (seqs != self.eos_id).all(-1).long()  # no EOS: cut at T, listed last
            order = torch.argsort((2 * lengths + cut) * V ** T + code)
            self._enum_cpu = seqs[order]
            assert self._enum_cpu.shape[0] == self.n_per_context
        return self._enum_cpu

    def enumerate(self) -> Sequences:
        """All (x, y) pairs, prompt-major: N = X · n_per_context rows.

        ``x`` (N,), ``tokens`` (N, T), ``mask`` (N, T) on the space's device and dtype;
        ``.view(X, n_per_context)`` gives one row per prompt. Together the responses of a
        prompt form a complete prefix-free set, so Σ_y p_θ(y|x) = 1 for any policy.
        """
        ys = self._enumerate_cpu()
        n = ys.shape[0]
        x = torch.arange(self.X).repeat_interleave(n)
        tokens = ys.repeat(self.X, 1)
        mask = self.response_mask(tokens)
        dev = self.device
        return Sequences(x.to(dev), tokens.to(dev), mask.to(dev))

    def sample_contexts(self, n: int, generator: torch.Generator) -> Tensor:
        """x_i ~ ρ, shape (n,)."""
        check_positive_int(n, "n")
        check_generator(generator, self.device)
        return torch.multinomial(self.rho.to(work_dtype(self.dtype)), n, replacement=True,
                                 generator=generator)

    def check(self, x: Tensor, tokens: Tensor, mask: Tensor | None = None) -> None:
        """Shapes and ranges of a batch: x (*B,), tokens (*B, T) ids in [0, V), mask (*B, T)."""
        check_index(x, "x", self.X)
        check_index(tokens, "tokens", self.V)
        check_shape(tokens, "tokens", (*x.shape, self.T))
        check_same_device(x=x, tokens=tokens)
        if mask is not None:
            check_shape(mask, "mask", tuple(tokens.shape))
            check_same_device(tokens=tokens, mask=mask)
            check_mask(mask, "mask")


class SeqPolicy:
    """An autoregressive policy π_θ(y_t | x, y_<t) = softmax(logits_θ(x, y_<t)) over V tokens.

    Subclasses define :meth:`logits` (teacher-forced and causal: position t may read x and
    tokens[..., :t] only) and ``n_params``. Factor of J(θ): the trajectory factor,
    p_θ(y|x) = Π_t π_θ(y_t|h_t).
    """

    space: SeqSpace
    n_params: int

    def logits(self, theta: Tensor, x: Tensor, tokens: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _check_theta(self, theta: Tensor, name: str = "theta", *, finite: bool = True
                     ) -> Tensor:
        """``theta`` a floating (P,) tensor, finite unless ``finite=False`` (the caller
        checks the values later)."""
        check_tensor(theta, name, ndim=1, floating=True)
        if theta.shape[0] != self.n_params:
            raise ValueError(f"{name}: expected shape ({self.n_params},) for "
                             f"{type(self).__name__}, got {tuple(theta.shape)}")
        return check_finite(theta, name) if finite else theta

    def _check(self, theta: Tensor, x: Tensor, tokens: Tensor) -> None:
        self._check_theta(theta, finite=False)
        self.space.check(x, tokens)
        check_same_device(theta=theta, x=x)
        check_finite(theta, "theta")

    def token_logprobs(self, theta: Tensor, x: Tensor, tokens: Tensor) -> Tensor:
        """log π_θ(y_t | x, y_<t) at every position, (*B, T) (:func:`pgbook.trajectory.tokens.token_logprobs`:
        float32 for low-precision θ). Padding positions included: mask them before summing."""
        return token_logprobs(self.logits(theta, x, tokens), tokens)

    def init(self, generator: torch.Generator | None = None, scale: float = 1.0,
             like: Tensor | None = None, dtype: torch.dtype = torch.float64,
             device: torch.device | str = "cpu") -> Tensor:
        """θ of shape (P,): zeros (the uniform policy) without a generator, else N(0, scale²)."""
        if like is not None:
            check_tensor(like, "like", floating=True)
            dtype, device = like.dtype, like.device
        check_float_dtype(dtype)
        if generator is None:
            return torch.zeros(self.n_params, dtype=dtype, device=device)
        check_positive(scale, "scale", allow_zero=True)
        check_generator(generator, device)
        z = torch.randn(self.n_params, generator=generator, device=device,
                        dtype=work_dtype(dtype))
        return (scale * z).to(dtype)

    @torch.no_grad()
    def sample(self, theta: Tensor, x: Tensor | int, generator: torch.Generator) -> Sequences:
        """Draw responses y ~ π_θ(·|x) token by token.

        ``x`` is a (B,) tensor of prompt ids, or an int B (prompts then drawn from ρ).
        Returns :class:`Sequences` with tokens (B, T), the response mask (B, T) and the
        token log-probs recorded while sampling (B, T) (0 on the padding after EOS).
        The loop runs over the T ≤ 5 positions (each step depends on the previous token);
        every step is batched over B.
        """
        sp = self.space
        check_tensor(theta, "theta", ndim=1, floating=True)
        if isinstance(x, int) and not isinstance(x, bool):
            x = sp.sample_contexts(x, generator).to(theta.device)
        check_tensor(x, "x", ndim=1, nonempty=True)
        check_index(x, "x", sp.X)
        check_generator(generator, theta.device)
        theta = theta.detach()
        B = x.shape[0]
        tokens = torch.full((B, sp.T), sp.pad_id, dtype=torch.long, device=theta.device)
        logp = theta.new_zeros(B, sp.T, dtype=torch.promote_types(theta.dtype, torch.float32))
        done = torch.zeros(B, dtype=torch.bool, device=theta.device)
        for t in range(sp.T):
            lg = self.logits(theta, x, tokens)[:, t]
            lp = torch.log_softmax(lg.to(logp.dtype), -1)
            y = torch.multinomial(lp.exp(), 1, generator=generator).squeeze(-1)
            y = torch.where(done, torch.full_like(y, sp.pad_id), y)
            tokens[:, t] = y
            logp[:, t] = torch.where(done, lp.new_zeros(()), lp.gather(-1, y[:, None]).squeeze(-1)).to(logp.dtype)
            done = done | (y == sp.eos_id)
        return Sequences(x, tokens, sp.response_mask(tokens, theta.dtype), logp)


class MLPPolicy(SeqPolicy):
    """A small shared-parameter LM: the same weights at every position,

        h_t = tanh(E_ctx[x] + E_prev[y_{t−1}] + E_pos[t]),   logits_t = h_t W + b,

    with y_0 = BOS (an extra row of E_prev). θ = (E_ctx (X, d), E_prev (V+1, d),
    E_pos (T, d), W (d, V), b (V,)) flattened; see :attr:`blocks`. Because every position
    shares W and b, a gradient that reaches one position moves all of them (unlike a table).
    """

    def __init__(self, space: SeqSpace, hidden: int = 8):
        _check_space(space)
        self.space = space
        self.hidden = d = check_positive_int(hidden, "hidden")
        X, V, T = space.X, space.V, space.T
        shapes = [("E_ctx", (X, d)), ("E_prev", (V + 1, d)), ("E_pos", (T, d)),
                  ("W", (d, V)), ("b", (V,))]
        self.blocks: dict[str, tuple[slice, tuple]] = {}
        start = 0
        for name, shape in shapes:
            n = math.prod(shape)
            self.blocks[name] = (slice(start, start + n), shape)
            start += n
        self.n_params = start

    def unflatten(self, theta: Tensor) -> dict:
        """The parameter blocks of θ, a finite floating (P,) tensor, as views, by name."""
        self._check_theta(theta)
        return self._blocks(theta)

    def _blocks(self, theta: Tensor) -> dict:
        """:meth:`unflatten` for a θ its caller has checked."""
        return {k: theta[s].view(shape) for k, (s, shape) in self.blocks.items()}

    def logits(self, theta: Tensor, x: Tensor, tokens: Tensor) -> Tensor:
        """logits (*B, T, V) for every position, teacher-forced on ``tokens`` (*B, T)."""
        self._check(theta, x, tokens)
        p = self._blocks(theta)
        bos = torch.full_like(tokens[..., :1], self.space.V)
        prev = torch.cat([bos, tokens[..., :-1]], -1)
        emb = torch.nn.functional.embedding
        h = torch.tanh(emb(x, p["E_ctx"]).unsqueeze(-2) + emb(prev, p["E_prev"]) + p["E_pos"])
        return h @ p["W"] + p["b"]

    def __repr__(self) -> str:
        return f"MLPPolicy(hidden={self.hidden}, P={self.n_params})"


class TabularPolicy(SeqPolicy):
    """One free logit vector per (prompt, prefix): π_θ(·|x, y_<t) = softmax(θ[x, code(y_<t)]).

    It can represent any distribution over responses, and no two prefixes share a
    parameter. θ has X · n_prefixes · V entries, n_prefixes = Σ_{t<T} V^t (prefixes that
    contain EOS are included; they are reached only on padding).
    """

    def __init__(self, space: SeqSpace):
        _check_space(space)
        self.space = space
        V, T = space.V, space.T
        self.n_prefixes = sum(V ** t for t in range(T))
        self.n_params = space.X * self.n_prefixes * V
        s = torch.arange(T)[:, None]
        t = torch.arange(T)[None, :]
        # code(y_<t) = offset_t + Σ_{s<t} y_s V^{t−1−s}, offset_t = Σ_{u<t} V^u
        self._powers = torch.where(s < t, V ** (t - 1 - s).clamp_min(0), 0)  # (T, T)
        self._offsets = torch.tensor([sum(V ** u for u in range(k)) for k in range(T)])

    def prefix_codes(self, tokens: Tensor) -> Tensor:
        """code(y_<t) for every position, (*B, T) integers in [0, n_prefixes)."""
        check_tensor(tokens, "tokens")
        if tokens.shape[-1:] != (self.space.T,):
            raise ValueError(f"tokens: expected shape (..., {self.space.T}), got "
                             f"{tuple(tokens.shape)}")
        check_index(tokens, "tokens", self.space.V)
        dev = tokens.device
        return (tokens.unsqueeze(-1) * self._powers.to(dev)).sum(-2) + self._offsets.to(dev)

    def logits(self, theta: Tensor, x: Tensor, tokens: Tensor) -> Tensor:
        self._check(theta, x, tokens)
        table = theta.view(self.space.X, self.n_prefixes, self.space.V)
        return table[x.unsqueeze(-1).expand_as(tokens), self.prefix_codes(tokens)]

    def __repr__(self) -> str:
        return f"TabularPolicy(prefixes={self.n_prefixes}, P={self.n_params})"


class Tempered(SeqPolicy):
    """``policy`` sampled at temperature τ: logits / τ (same θ, same parameters)."""

    def __init__(self, policy: SeqPolicy, temperature: float):
        if not isinstance(policy, SeqPolicy):
            raise ValueError(f"policy: expected a SeqPolicy, got {type(policy).__name__}")
        self.base = policy
        self.space = policy.space
        self.n_params = policy.n_params
        self.temperature = check_positive(temperature, "temperature")

    def logits(self, theta: Tensor, x: Tensor, tokens: Tensor) -> Tensor:
        """The base policy's logits divided by τ, (*B, T, V)."""
        return self.base.logits(theta, x, tokens) / self.temperature

    def __repr__(self) -> str:
        return f"Tempered({self.base!r}, τ={self.temperature:g})"


_SPACE_INTERFACE = ("X", "V", "T", "token_names", "check")


def _check_space(space: SeqSpace) -> SeqSpace:
    """A :class:`SeqSpace`, or an object with the attributes a policy reads (the multi-turn
    tree of chapter 15, :class:`pgbook.worlds.agentic.TurnSpace`)."""
    if not isinstance(space, SeqSpace) and not all(hasattr(space, a) for a in _SPACE_INTERFACE):
        raise ValueError(f"space: expected a SeqSpace (or an object with {list(_SPACE_INTERFACE)}),"
                         f" got {type(space).__name__}")
    return space


# -- rewards (the reward factor) --------------------------------------------------------------
class SeqReward:
    """A reward on responses, given as per-token rewards r_t (zero on padding):

        R(x, y) = Σ_t m_t r_t(x, y).

    An *outcome* reward puts all of R on the last response token (EOS, or position T for a
    cut response); a *per-token* reward spreads it. ``token_fn(x, tokens, mask) -> (*B, T)``.
    Factor of J(θ): the reward factor.
    """

    def __init__(self, token_fn: Callable[[Tensor, Tensor, Tensor], Tensor], name: str,
                 outcome: bool):
        if not callable(token_fn):
            raise ValueError(f"token_fn: expected a callable token_fn(x, tokens, mask), got "
                             f"{type(token_fn).__name__}")
        if not isinstance(name, str):
            raise ValueError(f"name: expected a string, got {name!r}")
        if not isinstance(outcome, bool):
            raise ValueError(f"outcome: expected True or False, got {outcome!r}")
        self.token_fn = token_fn
        self.name = name
        self.outcome = outcome

    def token_rewards(self, x: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """r_t, shape (*B, T), zero where the mask is zero (whatever ``token_fn`` put there).

        ``x`` (*B,) and ``tokens`` (*B, T) integer ids, ``mask`` (*B, T) 0/1 (bool, integer or
        float; not all zero), on one device. The rewards have the mask's dtype when it is
        floating, else the reward's own."""
        check_tensor(x, "x")
        check_tensor(tokens, "tokens")
        for name, t in (("x", x), ("tokens", tokens)):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise ValueError(f"{name}: expected integer ids, got dtype {t.dtype}")
        if tokens.dim() < 1 or tuple(tokens.shape[:-1]) != tuple(x.shape):
            raise ValueError(f"tokens: expected shape {(*x.shape, 'T')} (one row per prompt of "
                             f"x), got {tuple(tokens.shape)}")
        check_shape(mask, "mask", tuple(tokens.shape))
        check_same_device(x=x, tokens=tokens, mask=mask)
        check_mask(mask, "mask")
        r = self.token_fn(x, tokens, mask)
        check_shape(r, "token_fn(x, tokens, mask)", tuple(tokens.shape))
        check_finite_where(r, mask, "token_fn(x, tokens, mask)")
        return torch.where(mask != 0, r, torch.zeros_like(r))

    def __call__(self, x: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """R(x, y), shape (*B,)."""
        return self.token_rewards(x, tokens, mask).sum(-1)

    def of(self, seqs: Sequences) -> Tensor:
        """R for a :class:`Sequences` batch, (*B,)."""
        return self(seqs.x, seqs.tokens, seqs.mask)

    def __repr__(self) -> str:
        return f"SeqReward({self.name!r}, {'outcome' if self.outcome else 'per-token'})"


def outcome_reward(fn: Callable[[Tensor, Tensor, Tensor], Tensor],
                   name: str = "outcome") -> SeqReward:
    """An outcome reward from ``fn(x, tokens, mask) -> R (*B,)``, placed on the last
    response token (so its reward-to-go is R at every response position)."""

    if not callable(fn):
        raise ValueError(f"fn: expected a callable fn(x, tokens, mask) -> R, got "
                         f"{type(fn).__name__}")

    def token_fn(x, tokens, mask):
        R = fn(x, tokens, mask)
        check_shape(R, "fn(x, tokens, mask)", tuple(x.shape))
        dtype = mask.dtype if mask.is_floating_point() else \
            (R.dtype if R.is_floating_point() else torch.float32)
        R = R.to(dtype)
        last = ((mask != 0).sum(-1) - 1).clamp_min(0)
        out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return out.scatter(-1, last.unsqueeze(-1), R.unsqueeze(-1))

    return SeqReward(token_fn, name, outcome=True)


def equals_target(space: SeqSpace, targets: Sequence[str]) -> SeqReward:
    """R = 1 if the response equals the prompt's target string (EOS included), else 0.

    ``targets``: one string per prompt, e.g. ``["ab", "ca", "bbc"]`` (EOS implied).
    """
    _check_space(space)
    if isinstance(targets, str) or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"targets: expected a list of strings (one per prompt), got {targets!r}")
    if len(targets) != space.X:
        raise ValueError(f"targets: expected one string per prompt ({space.X}), got {len(targets)}")
    tgt = space.encode(list(targets))  # (X, T)

    def fn(x, tokens, mask):
        check_index(x, "x", space.X)
        return (tokens == tgt.to(tokens.device)[x]).all(-1)

    return outcome_reward(fn, f"equals target {list(targets)}")


def contains(space: SeqSpace, pattern: str) -> SeqReward:
    """R = 1 if the response contains ``pattern`` as a contiguous substring, else 0."""
    _check_space(space)
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern: expected a non-empty string, got {pattern!r}")
    pat = space.encode([pattern])[0, : len(pattern)]
    k = pat.shape[0]
    if k > space.T:
        raise ValueError(f"pattern: {pattern!r} is longer than max_len = {space.T}")

    def fn(x, tokens, mask):
        win = tokens.unfold(-1, k, 1)                       # (*B, T−k+1, k)
        inside = mask.unfold(-1, k, 1).amin(-1) > 0          # window lies in the response
        return ((win == pat.to(tokens.device)).all(-1) & inside).any(-1)

    return outcome_reward(fn, f"contains {pattern!r}")


def token_table_reward(table: Tensor, name: str = "per-token") -> SeqReward:
    """A per-token reward r_t = table[x, y_t] (``table`` (X, V)), so R = Σ_t m_t table[x, y_t]."""
    check_tensor(table, "table", ndim=2, floating=True, nonempty=True)
    check_finite(table, "table")
    X, V = table.shape

    def token_fn(x, tokens, mask):
        check_index(x, "x", X)
        check_index(tokens, "tokens", V)
        dtype = mask.dtype if mask.is_floating_point() else table.dtype
        return table.to(device=tokens.device, dtype=dtype)[x.unsqueeze(-1), tokens]

    return SeqReward(token_fn, name, outcome=False)
