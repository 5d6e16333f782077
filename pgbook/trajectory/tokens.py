"""Token log-probabilities: the trajectory factor of a language model, read off its logits.

A response y = (y_1 … y_T) to a prompt x has probability π_θ(y|x) = Π_t π_θ(y_t | x, y_<t), so

    log p_θ(τ) = log ρ(x) + Σ_t log π_θ(y_t | h_t),     h_t = (x, y_<t),

and every policy-gradient loss of the book only needs the *sampled* token's log-probability
at each position, log π_θ(y_t|h_t) = z_t[y_t] − logsumexp(z_t), where z_t ∈ R^V are the
logits. Factor of J(θ): trajectory (these are the log p_θ(τ) terms that get differentiated).

Shapes: B responses, T positions, V vocabulary; ``logits`` (B, T, V), ``tokens`` (B, T).

Memory and speed. ``log_softmax(logits).gather(tokens)`` (:func:`naive_token_logprobs`)
builds and keeps a second (B, T, V) tensor for the backward pass; at B = 8, T = 1024, V =
32k that is a 1 GiB float32 copy per call. :func:`token_logprobs` keeps only the logsumexp
(B, T) and the logits it was given, and works through the B·T rows of the logits in small
blocks (about 512 KiB of float32 at a time, e.g. 4 rows at V = 32k): the forward's
temporaries and the backward's softmax stay in the CPU's cache instead of round-tripping a
(B, T, V) temporary through memory (``torch.logsumexp`` on the whole tensor builds one
internally). The backward writes the gradient (B, T, V) block by block: the only
(B, T, V) tensor the call allocates is the gradient itself. :func:`entropy_from_logits`
works the same way. ``chunk_size`` (rows of dim 0) only lowers the block size further.

Dtype rule. Log-probabilities are returned in ``torch.promote_types(logits.dtype,
torch.float32)``: float32 for bfloat16/float16/float32 logits, float64 for float64.
For low-precision logits the logsumexp is computed in float32 (a bfloat16 logsumexp of
magnitude ~10 is only resolved to ~0.03), block by block, and the gradient flows back in
the logits' dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    _is_transformed,
    check_index,
    check_mask,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    reject_unknown_options,
    work_dtype,
)


def _check_vocab(logits: Tensor) -> None:
    """The last dimension (the vocabulary) must hold at least one token: over an empty one
    there is no distribution (no log-prob, no entropy)."""
    if logits.shape[-1] == 0:
        raise ValueError(f"logits: expected a vocabulary dimension V ≥ 1 (the last), got shape "
                         f"{tuple(logits.shape)}")


def _check_logits_tokens(logits: Tensor, tokens: Tensor) -> None:
    check_tensor(logits, "logits", floating=True)
    if logits.dim() < 2:
        raise ValueError(f"logits: expected shape (B, T, V) (or (..., V)), got {tuple(logits.shape)}")
    _check_vocab(logits)
    check_tensor(tokens, "tokens")
    if tokens.dtype != torch.long:
        raise ValueError(f"tokens: expected dtype torch.int64 (long), got {tokens.dtype}")
    if tuple(tokens.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"tokens: expected shape {tuple(logits.shape[:-1])} (logits without the vocabulary "
            f"dimension), got {tuple(tokens.shape)}"
        )
    check_same_device(logits=logits, tokens=tokens)
    check_index(tokens, "tokens", logits.shape[-1])


def _check_normaliser(lse: Tensor) -> None:
    """Every position needs a finite logsumexp: no NaN or +inf logit, and at least one logit
    above −inf (−inf is how a token is forbidden; a position with every token forbidden has
    no distribution). Checked on the (…,) logsumexp, not the (…, V) logits."""
    if not _is_meta(lse) and not bool(torch.isfinite(lse).all()):
        raise ValueError(
            "logits: expected finite logits (−inf forbids a token, but NaN, +inf, or −inf for "
            f"every token of a position leave no distribution), got "
            f"{int((~torch.isfinite(lse)).sum())} such position(s)")


#: float32 elements of one block of rows (512 KiB): a block's temporaries stay in cache
_BLOCK = 1 << 17


def _row_views(x: Tensor) -> list[tuple[int, Tensor]]:
    """x (..., V) as (offset, (n, V) view) pairs covering its N = numel/V rows in order: one
    view when the layout allows it, else one per index of dim 0 (e.g. ``logits[:, :-1]``)."""
    V = x.shape[-1]
    try:
        return [(0, x.view(-1, V))]
    except RuntimeError:
        n = x[0].numel() // V if x.shape[0] else 0
        return [(i * n, x[i].reshape(-1, V)) for i in range(x.shape[0])]


def _blocks(x: Tensor, chunk_size: int | None) -> list[tuple[int, int, Tensor]]:
    """Blocks (start, stop, rows (stop − start, V)) of the flattened rows of x (..., V), at most
    ``_BLOCK`` elements each and at most ``chunk_size`` rows of dim 0 (one block on meta)."""
    V = max(x.shape[-1], 1)
    if x.device.type == "meta" or x.numel() == 0:
        return [(0, x.numel() // V, x.reshape(-1, x.shape[-1]))]
    step = max(1, _BLOCK // V)
    if chunk_size is not None and x.dim() > 1:
        step = min(step, chunk_size * (x[0].numel() // V))
    return [(off + a, off + min(a + step, len(rows)), rows[a:a + step])
            for off, rows in _row_views(x) for a in range(0, len(rows), step)]


def _lse(logits: Tensor, chunk_size: int | None) -> Tensor:
    """logsumexp over the last dimension, (…,), in the output dtype, block by block."""
    out_dtype = work_dtype(logits.dtype)
    lse = logits.new_empty(logits.numel() // max(logits.shape[-1], 1), dtype=out_dtype)
    for a, b, rows in _blocks(logits, chunk_size):
        torch.logsumexp(rows.to(out_dtype), dim=-1, out=lse[a:b])
    return lse.view(logits.shape[:-1])


def _picked(logits: Tensor, tokens: Tensor) -> Tensor:
    """z[token] at every position, (…,), in the output dtype."""
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).to(work_dtype(logits.dtype))


class _TokenLogprobs(torch.autograd.Function):
    """log π(token) = z[token] − logsumexp(z), with a backward that allocates only the gradient.

    ∂ log π(y)/∂z = onehot(y) − softmax(z), so the gradient of the logits is
    g · (onehot(y) − softmax(z)), written block by block into one (B, T, V) buffer.
    """

    @staticmethod
    def forward(logits, tokens, chunk_size):
        lse = _lse(logits, chunk_size)
        return _picked(logits, tokens) - lse, lse

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, tokens, chunk_size = inputs
        _, lse = output
        ctx.save_for_backward(logits, tokens, lse)
        ctx.chunk_size = chunk_size
        ctx.mark_non_differentiable(lse)

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        logits, tokens, lse = ctx.saved_tensors
        if grad_out is None:
            return None, None, None
        if torch.is_grad_enabled():
            # create_graph=True: an out-of-place, differentiable formula (double backward)
            p = torch.softmax(logits.to(lse.dtype), dim=-1)
            onehot = torch.zeros_like(p).scatter_(-1, tokens.unsqueeze(-1), 1.0)
            return (grad_out.unsqueeze(-1) * (onehot - p)).to(logits.dtype), None, None
        V = logits.shape[-1]
        grad = logits.new_empty(logits.shape)                 # contiguous: rows are a view
        grad_rows = grad.view(-1, V)
        g_all = grad_out.reshape(-1).to(lse.dtype)
        lse_all, tok_all = lse.reshape(-1), tokens.reshape(-1)
        same = logits.dtype == lse.dtype
        for a, b, rows in _blocks(logits, ctx.chunk_size):
            g = g_all[a:b].unsqueeze(-1)
            if same:  # write straight into the gradient buffer: no temporary
                buf = torch.sub(rows, lse_all[a:b].unsqueeze(-1), out=grad_rows[a:b])
            else:     # low precision: a float32 temporary of one block
                buf = rows.to(lse.dtype).sub_(lse_all[a:b].unsqueeze(-1))
            buf.exp_().mul_(-g)                                  # −g · softmax(z)
            buf.scatter_add_(-1, tok_all[a:b].unsqueeze(-1), g)  # + g · onehot(y)
            if not same:
                grad_rows[a:b].copy_(buf)
        return grad, None, None


def token_logprobs(logits: Tensor, tokens: Tensor, chunk_size: int | None = None) -> Tensor:
    """log π_θ(y_t | h_t) = z_t[y_t] − logsumexp(z_t) for every position, shape (B, T).

    Args:
        logits: (B, T, V) floating (any leading shape (..., V) works; chunks run over dim 0).
        tokens: (B, T) long, the token whose log-probability is wanted at each position
            (for a causal LM: the logits at position t score the token at position t + 1;
            shift before calling).
        chunk_size: at most this many rows of dim 0 per block (the default blocks are
            already small: about 512 KiB of float32 logits; see the module docstring).

    Returns (B, T) in float32 for bfloat16/float16/float32 logits and float64 for float64
    (the module's dtype rule), on the logits' device. Differentiable in ``logits``; neither
    pass allocates anything of size (B, T, V) except the gradient (see the module
    docstring). Under ``torch.func`` transforms a plain composite formula is used.
    Factor of J(θ): trajectory.
    """
    _check_logits_tokens(logits, tokens)
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    if _is_transformed(logits) or _is_transformed(tokens):  # inside torch.func: composite
        return _picked(logits, tokens) - torch.logsumexp(logits.to(work_dtype(logits.dtype)), -1)
    logp, lse = _TokenLogprobs.apply(logits, tokens, chunk_size)
    _check_normaliser(lse)
    return logp


def naive_token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """The textbook formula ``log_softmax(logits).gather(tokens)``, shape (B, T).

    It materialises the full (B, T, V) log-softmax (kept alive for the backward pass);
    provided as the reference :func:`token_logprobs` is compared and benchmarked against.
    Same dtype rule as :func:`token_logprobs` (float32 log-softmax for low-precision logits).
    """
    _check_logits_tokens(logits, tokens)
    z = logits.to(work_dtype(logits.dtype))
    _check_normaliser(torch.logsumexp(z.detach(), dim=-1))
    logp = torch.log_softmax(z, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _check_mask_like(mask: Tensor, ref: Tensor, name_ref: str) -> None:
    check_tensor(mask, "mask")
    if mask.shape != ref.shape:
        raise ValueError(f"mask: expected shape {tuple(ref.shape)} (that of {name_ref}), "
                         f"got {tuple(mask.shape)}")
    check_same_device(mask=mask, **{name_ref: ref})
    check_mask(mask, "mask")


def sequence_logprob(token_logp: Tensor, mask: Tensor) -> Tensor:
    """log π_θ(y|x) = Σ_t m_t · log π_θ(y_t|h_t), shape (B,), from (B, T) token log-probs.

    ``mask`` (B, T) is 1 on response tokens (see :func:`response_mask`) and 0 on prompt and
    padding. Masked positions contribute exactly zero, even where ``token_logp`` is −inf
    or NaN there (padding); on response tokens a log-prob may be −inf (a token of probability
    zero) but not NaN or +inf. A mask that is zero everywhere is an error. Factor of J(θ):
    trajectory (log p_θ(τ) up to log ρ(x)).
    """
    check_tensor(token_logp, "token_logp", floating=True)
    _check_mask_like(mask, token_logp, "token_logp")
    m = mask.to(torch.bool)
    if not _is_meta(token_logp) and not _is_meta(m) and \
            bool(((torch.isnan(token_logp) | (token_logp == torch.inf)) & m).any()):
        raise ValueError("token_logp: expected log-probabilities (≤ 0, −inf allowed) where the "
                         "mask is 1, got NaN or +inf there")
    return torch.where(m, token_logp, torch.zeros_like(token_logp)).sum(-1)


def response_mask(tokens: Tensor, eos_id: int, prompt_len: int = 0,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """The loss mask of sampled responses, shape (B, T), ``dtype`` (0/1), on tokens' device.

    m_t = 1 for prompt_len ≤ t ≤ t_eos, where t_eos is the first position ≥ ``prompt_len``
    holding ``eos_id`` (the EOS token itself is included: the policy chose to stop there),
    and 0 before ``prompt_len`` and after the first EOS. A row with no EOS is a response
    truncated at T: every position from ``prompt_len`` on is 1.
    Factor of J(θ): trajectory (only tokens the policy sampled belong to log p_θ(τ)).
    """
    check_tensor(tokens, "tokens", ndim=2)
    check_index(tokens, "tokens", 2 ** 62)  # integer ids ≥ 0 (the vocabulary is not known here)
    check_nonnegative_int(eos_id, "eos_id")
    check_nonnegative_int(prompt_len, "prompt_len")
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype: expected a torch.dtype, got {dtype!r}")
    T = tokens.shape[1]
    if prompt_len >= T:
        raise ValueError(f"prompt_len: expected less than T = {T}, got {prompt_len}")
    in_resp = torch.arange(T, device=tokens.device) >= prompt_len          # (T,)
    is_eos = (tokens == eos_id) & in_resp                                   # (B, T)
    eos_before = torch.cumsum(is_eos.to(torch.int32), dim=1) - is_eos.to(torch.int32)
    return (in_resp & (eos_before == 0)).to(dtype)


class _Entropy(torch.autograd.Function):
    """H = −Σ_v p_v log p_v with log p = z − logsumexp(z), block by block; saves only the
    logsumexp and H (…,). Backward: ∂H/∂z_v = −p_v (log p_v + H), written block by block."""

    @staticmethod
    def forward(logits, chunk_size):
        out_dtype = work_dtype(logits.dtype)
        n = logits.numel() // max(logits.shape[-1], 1)
        lse = logits.new_empty(n, dtype=out_dtype)
        H = logits.new_empty(n, dtype=out_dtype)
        for a, b, rows in _blocks(logits, chunk_size):
            z = rows.to(out_dtype)
            torch.logsumexp(z, dim=-1, out=lse[a:b])
            # a forbidden token (z = −inf) has p = 0; clamping its log p to the dtype's
            # lowest finite value makes its term p·log p exactly 0 (0 · −inf would be NaN)
            logp = (z - lse[a:b].unsqueeze(-1)).clamp_(min=torch.finfo(out_dtype).min)
            torch.sum(logp.exp() * logp, dim=-1, out=H[a:b])
        H.neg_()
        return H.view(logits.shape[:-1]), lse

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, chunk_size = inputs
        H, lse = output
        ctx.save_for_backward(logits, lse, H)
        ctx.chunk_size = chunk_size
        ctx.mark_non_differentiable(lse)

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        logits, lse, H = ctx.saved_tensors
        if grad_out is None:
            return None, None
        lse_all, H_all = lse.reshape(-1), H.reshape(-1)
        if torch.is_grad_enabled():  # double backward: a differentiable formula
            logp = torch.log_softmax(logits.to(lse.dtype), dim=-1)
            logp = logp.clamp(min=torch.finfo(lse.dtype).min)
            grad = -grad_out.unsqueeze(-1) * logp.exp() * (logp + H.unsqueeze(-1))
            return grad.to(logits.dtype), None
        grad = logits.new_empty(logits.shape)
        grad_rows = grad.view(-1, logits.shape[-1])
        g_all = grad_out.reshape(-1).to(lse.dtype)
        lo = torch.finfo(lse.dtype).min
        for a, b, rows in _blocks(logits, ctx.chunk_size):
            logp = (rows.to(lse.dtype) - lse_all[a:b].unsqueeze(-1)).clamp_(min=lo)
            buf = logp.exp().mul_(-g_all[a:b].unsqueeze(-1))        # −g · p
            buf.mul_(logp.add_(H_all[a:b].unsqueeze(-1)))           # · (log p + H)
            grad_rows[a:b].copy_(buf)
        return grad, None


def entropy_from_logits(logits: Tensor, chunk_size: int | None = None) -> Tensor:
    """Per-position entropy H_t = −Σ_v π(v|h_t) log π(v|h_t), shape (…,) = (B, T).

    log π(v|h_t) = z_{t,v} − logsumexp(z_t), computed block by block like
    :func:`token_logprobs` (same dtype rule: float32 for low-precision logits; same
    ``chunk_size``): nothing of size (B, T, V) is allocated but the gradient.
    Differentiable: ∂H_t/∂z_{t,v} = −π(v|h_t) (log π(v|h_t) + H_t). A logit of −inf (a
    forbidden token) contributes 0 · (−inf) := 0 to the sum, in the value and in the
    gradient; NaN or +inf logits, or a position whose every logit is −inf, raise
    ValueError. A diagnostic of the
    trajectory factor: how spread π_θ(·|h_t) is (entropy collapse, chapter 14).
    """
    check_tensor(logits, "logits", floating=True)
    if logits.dim() < 1:
        raise ValueError(f"logits: expected shape (..., V), got {tuple(logits.shape)}")
    _check_vocab(logits)
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    if logits.dim() == 1:
        return entropy_from_logits(logits.unsqueeze(0), chunk_size)[0]
    if logits.numel() == 0:
        return logits.new_zeros(logits.shape[:-1], dtype=work_dtype(logits.dtype))
    if _is_transformed(logits):  # inside torch.func: composite
        logp = torch.log_softmax(logits.to(work_dtype(logits.dtype)), dim=-1)
        logp = logp.clamp(min=torch.finfo(logp.dtype).min)
        return -(logp.exp() * logp).sum(-1)
    H, lse = _Entropy.apply(logits, chunk_size)
    _check_normaliser(lse)
    return H


def naive_entropy(logits: Tensor) -> Tensor:
    """The textbook −Σ softmax(z) · log_softmax(z) over the last dimension, shape (…,).

    It materialises two (B, T, V) tensors (kept for the backward pass); the reference
    :func:`entropy_from_logits` is compared and benchmarked against (same dtype rule).
    """
    check_tensor(logits, "logits", floating=True)
    if logits.dim() < 1:
        raise ValueError(f"logits: expected shape (..., V), got {tuple(logits.shape)}")
    _check_vocab(logits)
    z = logits.to(work_dtype(logits.dtype))
    _check_normaliser(torch.logsumexp(z.detach(), dim=-1))
    logp = torch.log_softmax(z, dim=-1).clamp(min=torch.finfo(z.dtype).min)
    return -(logp.exp() * logp).sum(-1)


# -- causal language models: the shift done once -----------------------------------------------
_eos_mask = response_mask  # causal_logprobs has an argument of that name


class CausalLogprobs(NamedTuple):
    """Response log-probs and their mask, aligned with the tokens they score (see
    :func:`causal_logprobs`): ``logp`` (float, 0 off the mask) and ``mask`` (0/1, same
    dtype), both (B, N) with ``prompt_len`` or (B, T) with a full-length ``response_mask``."""

    logp: Tensor
    mask: Tensor


def _model_logits(model, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Logits of ``model`` on ``input_ids[:, :-1]`` (the last token predicts nothing), from a
    tensor output, an output object with ``.logits`` (transformers) or a tuple (logits first)."""
    if not callable(model):
        raise ValueError(f"logits_or_model: expected a (B, T, V) tensor of logits or a module "
                         f"mapping token ids to logits, got {type(model).__name__}")
    if attention_mask is None:
        out = model(input_ids[:, :-1])
    else:
        out = model(input_ids[:, :-1], attention_mask=attention_mask[:, :-1])
    logits = getattr(out, "logits", None)
    if logits is None:
        logits = out[0] if isinstance(out, (tuple, list)) and out else out
    if not isinstance(logits, Tensor):
        raise ValueError(f"logits_or_model: the model returned {type(out).__name__}; expected "
                         f"logits (B, T, V), an object with .logits, or a tuple starting with them")
    return logits


@reject_unknown_options
def causal_logprobs(logits_or_model: Tensor | Callable, input_ids: Tensor, prompt_len: int | None = None, *,
                    response_mask: Tensor | None = None, eos_id: int | None = None,
                    attention_mask: Tensor | None = None, temperature: float = 1.0,
                    chunk_size: int | None = None) -> CausalLogprobs:
    """log π_θ(y_t | h_t) of the response tokens of a causal LM, and their mask, aligned.

    A causal LM's logits at position t score the token at position t + 1:

        logp[b, j] = log softmax(z[b, j − 1] / τ)[ids[b, j]],     z = model(ids)  (B, T, V),

    so the log-probs of the tokens ``ids[:, 1:]`` come from the logits ``z[:, :-1]``. This
    function does that shift once and returns log-probs and a mask that index the *same*
    tokens, so no mask ever needs shifting by hand (``mask[:, :-1]`` is the tempting,
    silent off-by-one: it drops each response's last token, EOS included, and keeps the
    prompt's last token).

    Args:
        logits_or_model: the logits (B, T, V) of the model on ``input_ids`` (or (B, T − 1, V)
            on ``input_ids[:, :-1]``), or a module/callable mapping (B, T) ids to logits:
            a :class:`pgbook.worlds.gpt.GPT`, your own model, or a ``transformers`` model
            (its output's ``.logits`` is used). A model is called once on
            ``input_ids[:, :-1]`` (``attention_mask[:, :-1]`` passed as ``attention_mask``
            when given); gradients flow to its parameters.
        input_ids: (B, T) long, prompt then response.
        prompt_len: P, the column where responses start (prompts left-padded to a common
            length P, as :func:`pgbook.worlds.gpt.sample` lays them out). The outputs are
            then (B, N), N = T − P, aligned with ``input_ids[:, P:]``.
        response_mask: 0/1 (or bool), 1 on response tokens to train on. With ``prompt_len``:
            (B, N) aligned with ``input_ids[:, P:]``, or (B, T) aligned with ``input_ids``
            (its prompt columns must be 0). Without ``prompt_len``: (B, T) aligned with
            ``input_ids`` (any layout: right-padded prompts, tool tokens masked out), and the
            outputs are (B, T) with column 0 = 0 (nothing predicts the first token; its mask
            must be 0).
        eos_id: with ``prompt_len`` and no ``response_mask``: the mask is 1 up to and
            including each response's first ``eos_id`` (:func:`response_mask`); with neither,
            every response token counts.
        attention_mask: (B, T), passed to the model (only with a model).
        temperature: τ > 0; the logits are divided by it (in their own dtype, as a
            sampler does), and the sampler's τ and the trainer's must agree (see
            :func:`pgbook.train.grpo.check_on_policy`).
        chunk_size: passed to :func:`token_logprobs` (memory of the log-softmax).

    Returns :class:`CausalLogprobs` ``(logp, mask)``: ``logp`` float32 (float64 for float64
    logits), 0 off the mask and differentiable on it; ``mask`` 0/1 in the same dtype. Feed
    them to :func:`pgbook.methods.policy_loss` / :func:`~pgbook.methods.method_loss`.
    Factor of J(θ): trajectory (log p_θ(τ) = Σ_t log π_θ(y_t|h_t) over the response).
    """
    check_tensor(input_ids, "input_ids", ndim=2)
    if input_ids.dtype != torch.long:
        raise ValueError(f"input_ids: expected dtype torch.int64 (long), got {input_ids.dtype}")
    B, T = input_ids.shape
    if T < 2:
        raise ValueError(f"input_ids: expected at least 2 positions (a prompt token and a "
                         f"response token), got shape {tuple(input_ids.shape)}")
    if prompt_len is not None:
        if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) \
                or not 1 <= prompt_len < T:
            raise ValueError(f"prompt_len: expected an integer in [1, {T - 1}] (the column "
                             f"where responses start, T = {T}), got {prompt_len!r}")
    elif response_mask is None:
        raise ValueError("prompt_len: expected prompt_len (responses start at that column) or "
                         "a (B, T) response_mask, got neither")
    if eos_id is not None:
        if isinstance(eos_id, bool) or not isinstance(eos_id, int) or eos_id < 0:
            raise ValueError(f"eos_id: expected a non-negative integer, got {eos_id!r}")
        if prompt_len is None or response_mask is not None:
            raise ValueError("eos_id: expected it with prompt_len and without response_mask "
                             "(a response_mask already says where each response ends)")
    tau = check_positive(temperature, "temperature")
    if isinstance(logits_or_model, Tensor):
        if attention_mask is not None:
            raise ValueError("attention_mask: only used when a model is given, got logits")
        logits = logits_or_model
    else:
        if attention_mask is not None:
            check_tensor(attention_mask, "attention_mask")
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask: expected shape {(B, T)} (that of input_ids), "
                                 f"got {tuple(attention_mask.shape)}")
        logits = _model_logits(logits_or_model, input_ids, attention_mask)
    check_tensor(logits, "logits", ndim=3, floating=True)
    if logits.shape[:2] not in ((B, T), (B, T - 1)):
        raise ValueError(f"logits: expected shape ({B}, {T}, V) (on input_ids) or "
                         f"({B}, {T - 1}, V) (on input_ids[:, :-1]), got {tuple(logits.shape)}")
    check_same_device(logits=logits, input_ids=input_ids)
    P = 1 if prompt_len is None else prompt_len
    z = logits[:, P - 1:T - 1]                          # z[:, j] scores input_ids[:, P + j]
    if tau != 1.0:
        z = z / tau
    lp = token_logprobs(z, input_ids[:, P:], chunk_size=chunk_size)      # (B, T − P)
    if prompt_len is None:
        lp = torch.cat([lp.new_zeros(B, 1), lp], dim=1)                   # aligned with ids
    N = lp.shape[1]
    if response_mask is not None:
        check_tensor(response_mask, "response_mask")
        check_same_device(response_mask=response_mask, input_ids=input_ids)
        if prompt_len is not None and tuple(response_mask.shape) == (B, T):
            check_mask(response_mask, "response_mask")
            if not _is_meta(response_mask) and bool((response_mask[:, :P] != 0).any()):
                raise ValueError(f"response_mask: a (B, T) mask must be 0 on the prompt "
                                 f"columns [0, {P}), got ones there")
            response_mask = response_mask[:, P:]
        check_mask(response_mask, "response_mask", (B, N))
        if prompt_len is None and not _is_meta(response_mask) and \
                bool((response_mask[:, 0] != 0).any()):
            raise ValueError("response_mask: column 0 must be 0 (nothing predicts the first "
                             "token of input_ids), got ones there")
        mask = response_mask.to(lp.dtype)
    elif eos_id is not None:
        mask = _eos_mask(input_ids[:, P:], eos_id, 0, dtype=lp.dtype)
    else:
        mask = torch.ones_like(lp)
    return CausalLogprobs(torch.where(mask.to(torch.bool), lp, torch.zeros_like(lp)), mask)


__all__ = [
    "CausalLogprobs",
    "causal_logprobs",
    "entropy_from_logits",
    "naive_entropy",
    "naive_token_logprobs",
    "response_mask",
    "sequence_logprob",
    "token_logprobs",
]
