"""A tiny GPT, a character tokenizer and batched sampling: the policy π_θ of Part II.

A language model's trajectory is a response y = (y_1 … y_T) to a prompt x, and its
probability is the product of the model's next-token probabilities,

    p_θ(τ) = ρ(x) · Π_t π_θ(y_t | h_t),      h_t = (x, y_<t),

so everything a policy-gradient method needs from the model is *one log-probability per
sampled token*: the trajectory factor of J(θ) = E_{τ~p_θ}[R(τ)]. This module provides

* :class:`GPTConfig` and :class:`GPT`: a decoder-only transformer in the spirit of
  nanoGPT's ``model.py`` (token + position embeddings, pre-LayerNorm blocks of causal
  self-attention and an MLP, a final LayerNorm and a linear head, optionally tied to the
  token embedding). ``GPT(config)(idx)`` maps (B, T) token ids to (B, T, V) logits.
* :class:`CharTokenizer`: one token per character plus three special tokens
  ``PAD = 0``, ``BOS = 1``, ``EOS = 2``.
* :func:`sample`: batched autoregressive sampling that returns the sequences, the
  log-probability of every sampled token *under the sampling distribution* and the
  response mask (:class:`Sample`); :func:`logprobs` recomputes the same log-probabilities
  from one forward pass (that is what a trainer differentiates).
* :class:`KVCache`: the keys and values of the positions already run, so that sampling
  runs each new token once (``model(idx, cache)``) instead of re-running the prefix, and
  a prompt shared by a group of G responses runs once for all of them.

Token layout (used by :mod:`pgbook.worlds.tasks` and the chapters that train the model): a batch
of prompts is a (B, P) long tensor, ``BOS`` first, left-padded with ``PAD`` so that every
prompt ends at column P − 1. :func:`sample` appends ``max_new_tokens`` = N columns, so a
sample is (B, T) with T = P + N, and every per-token tensor (log-probs, mask) is aligned
with the tokens: ``logprobs[b, t] = log π_θ(tokens[b, t] | tokens[b, :t])``, 0 where
there is nothing to score (the prompt, padding after EOS). The mask is 1 on the response
tokens up to and including the first EOS (:func:`pgbook.trajectory.tokens.response_mask`).

Devices and dtypes: the model computes on the device (and dtype) of its parameters; token
tensors must live on the same device. Log-probabilities are float32 for bfloat16/float32
logits and float64 for a float64 model (the rule of :mod:`pgbook.trajectory.tokens`), so sampling and
recomputing under ``torch.autocast(..., dtype=torch.bfloat16)`` works. A model moved to
the ``meta`` device runs :meth:`GPT.forward` and :func:`logprobs` for shapes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validate import (
    _is_meta,
    check_generator,
    check_index,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    check_tensor,
    make_generator,
)
from ..trajectory.tokens import response_mask, token_logprobs

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")


# -- the model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of :class:`GPT`.

    ``vocab_size`` V (take it from the tokenizer), ``block_size`` the longest sequence the
    position embedding covers, ``n_layer`` blocks of ``n_head`` heads over ``n_embd``
    channels (``n_embd`` must be divisible by ``n_head``), MLP width ``mlp_ratio·n_embd``,
    ``tie_weights``: the output head reuses the token embedding matrix (saves V·n_embd
    parameters, as in GPT-2). ``init_std``: the standard deviation of the initial weights.
    GPT-2 uses 0.02 at width 768; at width 32 that leaves attention nearly uniform and
    training sits on a long plateau, so the default here is 0.05.
    The defaults (one block, 2 heads, 32 channels) are the book's policy for the toy tasks
    of :mod:`pgbook.worlds.tasks`: about 14k parameters.
    """

    vocab_size: int
    block_size: int = 32
    n_layer: int = 1
    n_head: int = 2
    n_embd: int = 32
    mlp_ratio: int = 4
    tie_weights: bool = True
    init_std: float = 0.05

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio"):
            check_positive_int(getattr(self, name), name)
        check_positive(self.init_std, "init_std")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd: expected a multiple of n_head = {self.n_head}, "
                             f"got {self.n_embd}")


class KVCache:
    """The keys and values of the positions a :class:`GPT` has already seen.

    For each block, a pair (B, H, L, C/H) whose first ``length`` positions hold the keys and
    values of the positions run so far. ``model(idx, cache)`` appends idx's and lets idx
    attend to all of them, so decoding costs one position's work per new token (attention
    over the prefix) instead of a forward pass over the whole prefix, and a prompt shared by
    many rows can be run once and copied (:meth:`select`). Without autograd (sampling) the
    pairs are buffers of L = ``max_len`` positions written in place; when the keys need
    gradients (the trainer's shared-prompt pass) they are concatenated instead, since
    autograd cannot differentiate through a buffer that is overwritten.
    """

    def __init__(self, max_len: int):
        self.max_len = check_positive_int(max_len, "max_len")
        self.length = 0
        self.kv: dict[int, tuple[Tensor, Tensor]] = {}

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v (B, H, T, C/H) to block ``layer``'s keys and values and return all of
        them, (B, H, length + T, C/H). (``length`` moves on in :meth:`GPT.forward`, once
        every block has appended.)"""
        check_tensor(k, "k", floating=True)
        check_tensor(v, "v", floating=True)
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(f"k, v: expected two (B, H, T, C/H) tensors of one shape, got "
                             f"{tuple(k.shape)} and {tuple(v.shape)}")
        a, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"k: expected at most {self.max_len - a} new positions (the cache "
                             f"holds {self.max_len}, {a} used), got {k.shape[2]}")
        old = self.kv.get(layer)
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            if old is not None:
                k, v = torch.cat([old[0][:, :, :a], k], dim=2), torch.cat([old[1][:, :, :a], v], dim=2)
            self.kv[layer] = (k, v)
            return k, v
        if old is None or old[0].shape[2] < end:  # buffers for max_len positions (keys' dtype)
            shape = (*k.shape[:2], self.max_len, k.shape[3])
            buffers = (k.new_empty(shape), v.new_empty(shape))
            if old is not None:
                buffers[0][:, :, :a], buffers[1][:, :, :a] = old[0][:, :, :a], old[1][:, :, :a]
            self.kv[layer] = old = buffers
        old[0][:, :, a:end], old[1][:, :, a:end] = k, v
        return old[0][:, :, :end], old[1][:, :, :end]

    def select(self, rows: Tensor) -> None:
        """Keep the batch rows ``rows`` (a long index): reorder, drop or repeat them (e.g. a
        prompt run once, copied to each of its G responses)."""
        check_tensor(rows, "rows", ndim=1)
        if rows.dtype != torch.long:
            raise ValueError(f"rows: expected dtype torch.int64 (long), got {rows.dtype}")
        for k, _ in self.kv.values():
            check_index(rows, "rows", k.shape[0])
            break
        self.kv = {layer: (k.index_select(0, rows), v.index_select(0, rows))
                   for layer, (k, v) in self.kv.items()}


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions ≤ t.

    x (B, T, C) → q, k, v (B, H, T, C/H) → softmax(q kᵀ/√(C/H) + causal mask) v → (B, T, C),
    via ``F.scaled_dot_product_attention``. With a :class:`KVCache` the keys and values of
    earlier positions come from the cache, and x's T positions follow them.
    """

    def __init__(self, cfg: GPTConfig, layer: int = 0):
        super().__init__()
        self.n_head, self.layer = cfg.n_head, layer
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))
        past = 0 if cache is None else cache.length
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        if past == 0 or T == 1:   # the whole prefix, or one new token that sees all of it
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        else:                     # T new tokens after `past` cached ones: query i sees ≤ past + i
            allowed = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, cfg: GPTConfig, layer: int = 0):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        width = cfg.mlp_ratio * cfg.n_embd
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, width), nn.GELU(approximate="tanh"),
                                 nn.Linear(width, cfg.n_embd))

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A decoder-only transformer: token ids (B, T) → next-token logits (B, T, V).

        h⁰ = E[idx] + P[0:T]                        (token and position embeddings)
        hˡ = Block_l(hˡ⁻¹),  l = 1 … n_layer          (causal attention + MLP, pre-LN)
        logits = LN(h^L) Wᵀ                          (W = E when ``tie_weights``)

    ``logits[b, t]`` parametrises π_θ(· | idx[b, :t+1]): the distribution of the token
    at position t + 1. Matrices are drawn N(0, init_std²) (residual projections scaled by
    1/√(2·n_layer), as in GPT-2; biases 0, LayerNorm weights 1) from ``generator``
    (default: seed 0), so a model is reproducible and torch's global RNG is left as it
    was. Build it on the CPU and move it with ``.to(device, dtype)``.
    """

    def __init__(self, config: GPTConfig, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ValueError(f"config: expected a GPTConfig, got {type(config).__name__}")
        if generator is not None:
            check_generator(generator, "cpu")
        self.config = cfg = config
        with torch.random.fork_rng(devices=[]):  # torch's default inits, overwritten below
            self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
            self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)])
            self.ln_f = nn.LayerNorm(cfg.n_embd)
            self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.wte.weight
        g = generator if generator is not None else make_generator(0)
        for name, p in self.named_parameters():
            if p.dim() == 1:      # biases and LayerNorm: PyTorch defaults (0, and 1 for LN weight)
                continue
            residual = name.endswith(("proj.weight", "mlp.2.weight"))
            std = cfg.init_std / math.sqrt(2 * cfg.n_layer) if residual else cfg.init_std
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * std)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def num_parameters(self) -> int:
        """Number of trainable parameters (a tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """idx (B, T) long on the model's device → logits (B, T, V).

        Without ``cache`` idx holds positions 0 … T − 1 (T ≤ block_size). With a
        :class:`KVCache` (:meth:`new_cache`) it holds the *next* T positions, cache.length …
        cache.length + T − 1: their keys and values are appended to the cache and they
        attend to every earlier position, so ``model(x[:, :P], c)`` then ``model(x[:, P:], c)``
        gives the logits of ``model(x)`` (up to floating-point reassociation).
        """
        check_tensor(idx, "idx", ndim=2)
        past = 0 if cache is None else cache.length
        T = idx.shape[1]
        if past + T > self.config.block_size:
            raise ValueError(f"idx: expected at most block_size = {self.config.block_size} "
                             f"positions, got {past + T}" + (f" ({past} cached)" if past else ""))
        if cache is not None and past + T > cache.max_len:
            raise ValueError(f"cache: holds {cache.max_len} positions, {past + T} needed")
        if idx.device != self.wte.weight.device:
            raise ValueError(f"idx: expected tokens on the model's device "
                             f"{self.wte.weight.device}, got {idx.device}")
        check_index(idx, "idx", self.config.vocab_size)
        pos = torch.arange(past, past + T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.length += T
        return self.head(self.ln_f(x))

    def new_cache(self, max_len: int | None = None) -> KVCache:
        """An empty :class:`KVCache` for up to ``max_len`` positions (default: block_size)."""
        return KVCache(self.config.block_size if max_len is None else max_len)


# -- the tokenizer ------------------------------------------------------------------------


def _check_integer_ids(ids: Tensor, name: str) -> None:
    """Token ids must be an integer tensor (a float, bool or complex one is refused, never
    read as ids)."""
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer tensor of token ids, got dtype {ids.dtype}")


class CharTokenizer:
    """One token per character of ``chars``, after the specials PAD = 0, BOS = 1, EOS = 2.

    ``encode("ab")`` → [3, 4] (no specials added); ``decode`` drops PAD and BOS and stops at
    the first EOS (``specials=True`` shows them as ``·``, ``^`` and ``$`` instead, and does
    not stop). ``vocab_size`` = 3 + len(chars).
    """

    SHOW: ClassVar[dict] = {PAD: "·", BOS: "^", EOS: "$"}

    def __init__(self, chars: str):
        if not isinstance(chars, str) or not chars:
            raise ValueError(f"chars: expected a non-empty string, got {chars!r}")
        if len(set(chars)) != len(chars):
            raise ValueError(f"chars: expected distinct characters, got {chars!r}")
        self.chars = chars
        self.itos = list(SPECIALS) + list(chars)
        self.stoi = {c: i + len(SPECIALS) for i, c in enumerate(chars)}
        self.pad_id, self.bos_id, self.eos_id = PAD, BOS, EOS

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"CharTokenizer({self.chars!r}, vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        """Characters → ids (a ValueError names an unknown character)."""
        if not isinstance(text, str):
            raise ValueError(f"text: expected a string, got {type(text).__name__}")
        bad = sorted({c for c in text if c not in self.stoi})
        if bad:
            raise ValueError(f"text: characters {bad} are not in the vocabulary {self.chars!r}")
        return [self.stoi[c] for c in text]

    def decode(self, ids: Sequence[int] | Tensor, specials: bool = False) -> str:
        """Ids (a list or a 1-D tensor) → text; see the class docstring for specials."""
        if isinstance(ids, Tensor):
            check_tensor(ids, "ids", ndim=1)
            _check_integer_ids(ids, "ids")
            ids = ids.tolist()
        elif isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise ValueError(f"ids: expected a list of integer ids or a 1-D integer tensor, got "
                             f"{type(ids).__name__}")
        else:
            ids = list(ids)
            bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
            if bad:
                raise ValueError(f"ids: expected integer ids, got {bad[0]!r} "
                                 f"({type(bad[0]).__name__})")
        out = []
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"ids: expected ids in [0, {self.vocab_size}), got {i}")
            if i < len(SPECIALS):
                if specials:
                    out.append(self.SHOW[i])
                elif i == EOS:
                    break
                continue
            out.append(self.itos[i])
        return "".join(out)

    def decode_batch(self, tokens: Tensor, specials: bool = False) -> list[str]:
        """(B, T) ids → B strings (``decode`` row by row: for display, not for training)."""
        check_tensor(tokens, "tokens", ndim=2)
        _check_integer_ids(tokens, "tokens")
        return [self.decode(row, specials) for row in tokens.tolist()]

    def encode_batch(self, texts: Sequence[str], length: int | None = None, bos: bool = True,
                     device: torch.device | str = "cpu") -> Tensor:
        """Prompts as a (B, P) long tensor: ``BOS`` + text, left-padded with PAD to ``length``
        (default: the longest), so every prompt ends at column P − 1 (:func:`sample`'s layout)."""
        if isinstance(texts, str) or not texts:
            raise ValueError(f"texts: expected a non-empty list of strings, got {texts!r}")
        if length is not None:
            check_positive_int(length, "length")
        rows = [([BOS] if bos else []) + self.encode(t) for t in texts]
        P = max(map(len, rows)) if length is None else length
        if any(len(r) > P for r in rows):
            raise ValueError(f"length: expected at least {max(map(len, rows))}, got {P}")
        return torch.tensor([[PAD] * (P - len(r)) + r for r in rows], dtype=torch.long,
                            device=device)


# -- sampling and log-probabilities ---------------------------------------------------------


class Sample(NamedTuple):
    """A batch of sampled sequences, each (B, T) with T = P + max_new_tokens.

    ``tokens`` long: prompt then response (PAD after EOS); ``logprobs`` float:
    log π(tokens[b, t] | tokens[b, :t]) under the sampling distribution, 0 off the mask;
    ``mask`` float 0/1: the response tokens up to and including the first EOS.
    """

    tokens: Tensor
    logprobs: Tensor
    mask: Tensor


def _check_temperature(temperature: float) -> float:
    return check_positive(temperature, "temperature", allow_zero=True)


@torch.no_grad()
def sample(model: GPT, prompts: Tensor, max_new_tokens: int, generator: torch.Generator,
           temperature: float = 1.0, eos_id: int = EOS, pad_id: int = PAD,
           cache: bool = True) -> Sample:
    """Sample B responses at once: y_t ~ softmax(z_t / temperature), t = P … P + N − 1.

    Args:
        model: a :class:`GPT` (any module mapping (B, T) ids to (B, T, V) logits).
        prompts: (B, P) long on the model's device (left-padded, see the module docstring).
        max_new_tokens: N ≥ 1; P + N must not exceed the model's ``block_size``.
        generator: a ``torch.Generator`` on the model's device (the only randomness).
        temperature: τ > 0 samples from softmax(z/τ); τ = 0 is greedy decoding (argmax),
            and then ``logprobs`` holds the model's own (τ = 1) log-probabilities.
        cache: decode with a :class:`KVCache` (a :class:`GPT` only; other modules are always
            run on the whole prefix): the prompt is run once, then each step runs the one
            new token, so a step costs O(prefix) instead of a forward pass over the prefix.
            ``cache=False`` re-runs the prefix at every step (the reference it is tested
            against: the same random draws in the same order, hence the same tokens, and
            log-probs equal up to floating-point reassociation).

    Returns a :class:`Sample` (tokens, logprobs, mask), all (B, P + N). Rows stop
    independently: after a row's first EOS it receives ``pad_id`` with log-prob 0 and mask
    0. The loop runs over the N generated positions (each step one batched forward pass, on
    the new token with the cache, on the prefix without) and stops early once every row has
    ended. The recorded log-probs and :func:`logprobs` come from the same model up to
    floating-point reassociation. Deterministic given the generator's state. No gradient
    is recorded: these are the "old" log-probs of a rollout. Factor of J(θ): trajectory
    (draws τ ~ p_θ).
    """
    check_tensor(prompts, "prompts", ndim=2)
    if prompts.dtype != torch.long:
        raise ValueError(f"prompts: expected dtype torch.int64 (long), got {prompts.dtype}")
    check_positive_int(max_new_tokens, "max_new_tokens")
    tau = _check_temperature(temperature)
    check_nonnegative_int(eos_id, "eos_id")
    check_nonnegative_int(pad_id, "pad_id")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None:
        check_index(prompts, "prompts", vocab)
        for name, i in (("eos_id", eos_id), ("pad_id", pad_id)):
            if i >= vocab:
                raise ValueError(f"{name}: expected an id in [0, {vocab}), got {i}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    block = getattr(getattr(model, "config", None), "block_size", None)
    P = prompts.shape[1]
    if P == 0:
        raise ValueError(f"prompts: expected at least one column (each prompt ends at column "
                         f"P − 1, at least BOS), got shape {tuple(prompts.shape)}")
    if block is not None and P + max_new_tokens > block:
        raise ValueError(f"max_new_tokens: prompt length {P} + {max_new_tokens} exceeds the "
                         f"model's block_size = {block}")
    if _is_meta(prompts):
        raise ValueError("prompts: sampling needs values; the meta device has none")
    if generator.device.type != prompts.device.type:
        raise ValueError(f"generator: expected a generator on {prompts.device}, "
                         f"got one on {generator.device}")
    with torch.inference_mode():  # no autograd bookkeeping at all; results cloned out below
        tokens, logp = _decode(model, prompts, P + max_new_tokens, generator, tau, eos_id, pad_id,
                               cache and isinstance(model, GPT))
    tokens, logp = tokens.clone(), logp.clone()
    mask = response_mask(tokens, eos_id, P, dtype=logp.dtype)
    return Sample(tokens, logp * mask, mask)


def _decode(model: GPT, prompts: Tensor, T: int, generator: torch.Generator, tau: float,
            eos_id: int, pad_id: int, cache: bool) -> tuple[Tensor, Tensor]:
    """:func:`sample`'s loop: tokens (B, T) and the sampled tokens' log-probs (B, T)."""
    B, P = prompts.shape
    tokens = prompts.new_full((B, T), pad_id)
    tokens[:, :P] = prompts
    logp = None
    done = torch.zeros(B, dtype=torch.bool, device=prompts.device)
    kv = model.new_cache(T) if cache else None
    work = None                                               # the log-probs' dtype
    for t in range(P, T):
        if kv is None:
            z = model(tokens[:, :t])[:, -1]                   # (B, V) logits for position t
        elif t == P:                                          # each prompt once per group
            z = _prompt_logits(model, prompts, kv)[:, -1]
        else:                                                 # then one new token a step
            z = model(tokens[:, t - 1:t], kv)[:, -1]
        work = work or torch.promote_types(z.dtype, torch.float32)
        z = z.to(work)
        lp = torch.log_softmax(z if tau in (0.0, 1.0) else z / tau, dim=-1)
        if tau == 0.0:
            nxt = lp.argmax(-1)
        else:
            nxt = torch.multinomial(lp.exp(), 1, generator=generator).squeeze(-1)
        if logp is None:
            logp = lp.new_zeros(B, T)
        nxt = torch.where(done, pad_id, nxt)
        tokens[:, t] = nxt
        logp[:, t] = torch.where(done, 0.0, lp.gather(-1, nxt[:, None]).squeeze(-1))
        done = done | (nxt == eos_id)
        if bool(done.all()):
            break
    return tokens, logp


def _prompt_logits(model: GPT, prompts: Tensor, cache: KVCache) -> Tensor:
    """``model(prompts, cache)`` (B, P, V), running each run of identical consecutive prompts
    once (the G responses of a GRPO group are contiguous rows with the same prompt): the
    repeats get copies of its keys and values (:meth:`KVCache.select`)."""
    B = prompts.shape[0]
    if _is_meta(prompts) or B < 2:
        return model(prompts, cache)
    first = torch.ones(B, dtype=torch.bool, device=prompts.device)  # row starts a new prompt
    first[1:] = (prompts[1:] != prompts[:-1]).any(dim=1)
    starts = first.nonzero().squeeze(1)
    if 2 * starts.shape[0] > B:                       # few repeats: not worth the copies
        return model(prompts, cache)
    z = model(prompts.index_select(0, starts), cache)
    rows = first.cumsum(0) - 1                        # row b reads distinct prompt rows[b]
    cache.select(rows)
    return z.index_select(0, rows)


def next_token_logits(model: GPT, tokens: Tensor, prompt_len: int | None = None) -> Tensor:
    """``model(tokens[:, :-1])``, (B, T − 1, V): logits[:, t] scores tokens[:, t + 1].

    With ``prompt_len`` = P (a :class:`GPT` only), the first P columns are a prompt that
    consecutive rows may share (the G responses of a group): each run of identical prompts
    is computed once, its keys and values are copied to its rows (:class:`KVCache`), and
    only the response columns run per row, so a group costs one prompt plus G responses
    instead of G prompts plus G responses. The logits are those of the plain pass (up to
    floating-point reassociation; on the CPU they are bit-identical), and so are the
    gradients (up to the order in which the G copies' gradients are summed).
    """
    check_tensor(tokens, "tokens", ndim=2)
    T = tokens.shape[1]
    if prompt_len is not None:
        check_positive_int(prompt_len, "prompt_len")
        if prompt_len >= T:
            raise ValueError(f"prompt_len: expected less than the T = {T} positions of tokens, "
                             f"got {prompt_len}")
    if prompt_len is None or prompt_len >= T - 1 or not isinstance(model, GPT):
        return model(tokens[:, :-1])
    cache = model.new_cache(T - 1)
    z_prompt = _prompt_logits(model, tokens[:, :prompt_len], cache)
    return torch.cat([z_prompt, model(tokens[:, prompt_len:-1], cache)], dim=1)


def logprobs(model: GPT, tokens: Tensor, temperature: float = 1.0,
             chunk_size: int | None = None, prompt_len: int | None = None) -> Tensor:
    """Recompute log π(tokens[:, t] | tokens[:, :t]) for every t ≥ 1 in one forward pass.

    logits = model(tokens[:, :-1]) scores positions 1 … T − 1; the result (B, T) has a 0 in
    column 0 (nothing predicts the first token) and uses the memory-efficient
    :func:`pgbook.trajectory.tokens.token_logprobs` (``chunk_size`` is passed on). With the same
    ``temperature`` as :func:`sample` (τ > 0) it reproduces the sampled log-probs on the
    response positions; multiply by the mask to ignore the rest. ``prompt_len`` = P runs
    a prompt shared by consecutive rows (the first P columns) once (:func:`next_token_logits`;
    same values). Differentiable in the model's parameters (this is log π_θ in every policy
    loss). Factor of J(θ): trajectory.
    """
    check_tensor(tokens, "tokens", ndim=2)
    if tokens.dtype != torch.long:
        raise ValueError(f"tokens: expected dtype torch.int64 (long), got {tokens.dtype}")
    if tokens.shape[1] < 2:
        raise ValueError(f"tokens: expected at least 2 positions, got shape {tuple(tokens.shape)}")
    tau = check_positive(temperature, "temperature")
    z = next_token_logits(model, tokens, prompt_len)
    if tau != 1.0:
        z = z / tau
    lp = token_logprobs(z, tokens[:, 1:], chunk_size=chunk_size)
    return torch.cat([lp.new_zeros(lp.shape[0], 1), lp], dim=1)


__all__ = [
    "BOS",
    "EOS",
    "GPT",
    "PAD",
    "CharTokenizer",
    "GPTConfig",
    "KVCache",
    "Sample",
    "logprobs",
    "next_token_logits",
    "sample",
]
