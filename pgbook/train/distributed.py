"""Data-parallel training on torch.distributed: the same losses on several processes (appendix A1).

Scaling a policy-gradient trainer out is, first of all, data parallelism. W processes
(*ranks*) each hold a copy of the model, each computes the loss of its share of the batch, and
:class:`torch.nn.parallel.DistributedDataParallel` (DDP) **averages** their gradients before
the optimiser step. Inside a rank the share may be split again into M micro-batches whose
gradients are accumulated (summed). The question this module answers is what each rank must
compute so that the update is exactly the single-process update on the whole batch.

**Every aggregation is a ratio of sums.** Each built-in aggregation of :mod:`pgbook.aggregation`
is, over the B rows of the batch, L = Σ_i num_i / Σ_i cnt_i (:func:`row_terms`), with s_i =
Σ_t m_it ℓ_it the masked token sum of row i and L_i = Σ_t m_it its length:

    aggregation           num_i          cnt_i
    token_mean            s_i            L_i            (the batch's tokens)
    seq_mean_token_mean   s_i / L_i      1[L_i > 0]     (its non-empty responses)
    seq_mean_token_sum    s_i            1[L_i > 0]
    constant              s_i            L_max          (every row, L_max = max_tokens)

**The fix: a global normaliser.** All-reduce C = Σ_i cnt_i over the ranks (and the micro-batches)
*before* the loss, and let each micro-batch contribute W · Σ_{i∈mb} num_i / C
(:func:`global_normaliser`, :func:`shard_loss`). Summed over a rank's micro-batches and averaged
over ranks by DDP, that is Σ_i num_i / C: the single-process loss, and so the single-process
gradient, up to the order of floating-point sums. This is what the trainers do: verl's
``agg_loss`` in its engine workers divides by the all-reduced ``batch_num_tokens`` and
multiplies by ``dp_size``, OpenRLHF's ``aggregate_loss`` likewise, and TRL's
``loss_type="dapo"`` divides by the gathered ``num_items_in_batch`` over ``num_processes``.

**The pitfall: per-rank means.** If each micro-batch divides by its *own* count (``aggregate`` on
the local rows) and the results are averaged (DDP) or divided by M (accumulation), the rows of
shard k are weighted by C / (W·M·C_k) instead of 1: a reweighting of responses by how full
their shard happened to be. For the token mean with shard token counts n_k the relative error
of the token weights is √(AM(n)/HM(n) − 1) (arithmetic over harmonic mean of the n_k), about
their coefficient of variation; :func:`data_parallel_loss` computes both losses in one
process, so their gradients can be compared exactly. The per-sequence mean
(``seq_mean_token_mean``) survives per-rank averaging when every shard holds the same number
of non-empty responses (then C_k = C/(W·M)); the constant normaliser when every shard holds
the same number of rows. TRL's ``loss_type="bnpo"`` is the per-process token mean, and verl's
legacy FSDP worker (``dp_actor.py``) divides each micro-batch by its own token count.

**The trainer.** :func:`ddp_grpo_train` is the GRPO-family step of
:func:`pgbook.train.grpo.grpo_train` on W ranks, with the engine users already have: a
``torch.distributed`` process group (gloo on CPUs, NCCL on GPUs) and DDP. Groups stay whole on
a rank (each rank holds ``prompts_per_step / W`` prompts and all G responses of each). Each
group's responses are sampled with a generator of their own, whose seed every rank draws alike
from one seeded with ``seed``, so the batch does not depend on how the groups are split; the rewards, masks and log-probs are
all-gathered so that batch-level pieces (a batch-std advantage, KL shaping, a batch entropy
quantile) see the whole batch, as TRL does with its rewards. The result equals one process
running the same function (:func:`launch` starts the processes; ``python -m
pgbook.train.distributed --nproc 2`` or ``torchrun --nproc_per_node 2 -m
pgbook.train.distributed`` runs it from a shell).

**Carrying a composition to a real trainer.** :func:`trainer_options` maps the pieces of a
registered method onto the options of TRL (``GRPOConfig`` / ``RLOOConfig``), verl (Hydra keys)
and OpenRLHF (``train_ppo_ray`` flags); :func:`trainer_table` tabulates them.

Factor of J(θ): none of its own. Distribution must change *neither* factor: the same
advantages weigh the same ∇log π_θ terms; a per-rank mean silently changes the reward side
(the aggregation's weights).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import importlib
import inspect
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .. import methods as _methods
from .._validate import (
    _is_meta,
    check_finite_where,
    check_flag,
    check_index,
    check_mask,
    check_number,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    make_generator,
    reject_unknown_options,
    work_dtype,
)
from ..registry import get, method, methods, resolve
from ..reward import advantages as _adv
from ..reward.shaping import truncated_responses
from ..worlds.gpt import EOS, logprobs, sample
from .grpo import (
    _model_device,
    _on_policy_atol,
    _piece,
    _resolve,
    _trainer_logprobs,
    check_on_policy,
)

if TYPE_CHECKING:
    from ..worlds.tasks import Task

__all__ = [
    "CHECK_TOLERANCES",
    "NORMALISATIONS",
    "TRAINERS",
    "DDPHistory",
    "data_parallel_loss",
    "ddp_grpo_train",
    "global_normaliser",
    "group_layout",
    "launch",
    "main",
    "row_terms",
    "shard_loss",
    "token_losses",
    "trainer_options",
    "trainer_table",
]

#: how a micro-batch's loss is normalised: by the all-reduced global count, or by its own
NORMALISATIONS = ("global", "local")

_AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant")


# =============================================================================================
# The process group: helpers that are no-ops in a single process
# =============================================================================================
def _dist():
    """``torch.distributed`` if a process group is initialised, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _world() -> tuple[int, int]:
    """(world size, rank): (1, 0) without a process group."""
    d = _dist()
    return (d.get_world_size(), d.get_rank()) if d is not None else (1, 0)


def _all_reduce_sum(x: Tensor) -> Tensor:
    d = _dist()
    if d is None or _is_meta(x):
        return x
    y = x.detach().clone()
    d.all_reduce(y)
    return y


def _all_gather(x: Tensor) -> Tensor:
    """Every rank's ``x`` (same shape everywhere) concatenated along dim 0, in rank order."""
    d = _dist()
    if d is None:
        return x
    dtype = x.dtype
    y = x.to(torch.uint8) if dtype == torch.bool else x.contiguous()
    parts = [torch.empty_like(y) for _ in range(d.get_world_size())]
    d.all_gather(parts, y)
    out = torch.cat(parts)
    return out.to(torch.bool) if dtype == torch.bool else out


# =============================================================================================
# The losses: row terms, the global normaliser, a shard's share, and the single-process view
# =============================================================================================
def _check_mask_values(mask: Tensor, name: str, shape: tuple) -> None:
    """A 0/1 mask (bool, integer or floating) of ``shape``; unlike a whole batch's mask, a
    shard's may be all zero."""
    check_mask(mask, name, shape, allow_all_zero=True)


def _aggregation_name(aggregation: str) -> str:
    name = _methods._AGG_ALIASES.get(aggregation, aggregation) if isinstance(aggregation, str) \
        else aggregation
    if not isinstance(name, str) or name not in _AGGREGATIONS:
        raise ValueError(f"aggregation: expected one of {list(_AGGREGATIONS)} (the aggregations "
                         f"that are a ratio of sums over rows, so that ranks can share them), "
                         f"got {aggregation!r}")
    return name


def _max_tokens(max_tokens: int | None, T: int, m: Tensor) -> int:
    if max_tokens is None:
        return T
    L = check_positive_int(max_tokens, "max_tokens")
    if not _is_meta(m) and m.numel() and int(m.sum(-1).max()) > L:
        raise ValueError(f"max_tokens: expected at least the longest response "
                         f"({int(m.sum(-1).max())} tokens), got {L}")
    return L


def _row_counts(mask: Tensor, aggregation: str, max_tokens: int | None, dtype) -> Tensor:
    m = mask.to(torch.bool).to(dtype)
    lengths = m.sum(-1)
    if aggregation == "token_mean":
        return lengths
    if aggregation == "constant":
        return torch.full_like(lengths, _max_tokens(max_tokens, mask.shape[-1], m))
    return (lengths > 0).to(dtype)


@reject_unknown_options
def row_terms(per_token_loss: Tensor, mask: Tensor, aggregation: str,
              max_tokens: int | None = None) -> tuple[Tensor, Tensor]:
    """``(num, cnt)``, each (B,): the aggregation as a ratio of sums over rows,

        aggregate(per_token_loss, mask, aggregation) = Σ_i num_i / Σ_i cnt_i,

    with s_i = Σ_t m_it ℓ_it: token_mean (s_i, L_i), seq_mean_token_mean (s_i/L_i, 1[L_i>0]),
    seq_mean_token_sum (s_i, 1[L_i>0]), constant (s_i, L_max), L_max = ``max_tokens``
    (default T). ``per_token_loss`` (B, T) floating (any value off the mask, NaN included, is
    ignored); ``mask`` (B, T) 0/1 or bool, and may be all zero (a shard with no response in
    the loss: num = cnt = 0 there, except L_max for "constant"). Computed in float32 for
    low-precision losses, float64 for float64; ``num`` is differentiable. Factor of J(θ):
    reward (the weights of the token terms).
    """
    check_tensor(per_token_loss, "per_token_loss", ndim=2, floating=True)
    _check_mask_values(mask, "mask", tuple(per_token_loss.shape))
    check_same_device(per_token_loss=per_token_loss, mask=mask)
    check_finite_where(per_token_loss, mask, "per_token_loss")
    agg = _aggregation_name(aggregation)
    if max_tokens is not None:
        check_positive_int(max_tokens, "max_tokens")
    work = work_dtype(per_token_loss.dtype)
    m = mask.to(torch.bool)
    zero = torch.zeros((), dtype=work, device=per_token_loss.device)
    s = torch.where(m, per_token_loss.to(work), zero).sum(-1)
    cnt = _row_counts(mask, agg, max_tokens, work)
    if agg == "seq_mean_token_mean":
        lengths = m.to(work).sum(-1)
        s = s / torch.where(lengths > 0, lengths, torch.ones_like(lengths))
    return s, cnt


@reject_unknown_options
def global_normaliser(mask: Tensor, aggregation: str, max_tokens: int | None = None) -> Tensor:
    """C = Σ_i cnt_i over the rows of ``mask`` (B, T) on this rank, **all-reduced** (summed)
    over the ranks of the process group when one is initialised: the denominator of the
    aggregation over the whole global batch (every rank, every micro-batch). Pass the rank's
    whole batch for one optimiser step (all its micro-batches), and call it on every rank
    (it is a collective). A 0-dim float64 tensor on the mask's device (counts up to 2⁵³ are
    exact). A global count of 0 (no response token anywhere) raises ValueError.
    """
    check_tensor(mask, "mask", ndim=2)
    _check_mask_values(mask, "mask", tuple(mask.shape))
    agg = _aggregation_name(aggregation)
    if max_tokens is not None:
        check_positive_int(max_tokens, "max_tokens")
    c = _all_reduce_sum(_row_counts(mask, agg, max_tokens, torch.float64).sum())
    if not _is_meta(c) and not bool(c > 0):
        raise ValueError(f"mask: the global batch has no response in the loss (aggregation "
                         f"{agg!r} would divide by {float(c):g})")
    return c


@reject_unknown_options
def shard_loss(per_token_loss: Tensor, mask: Tensor, aggregation: str, normaliser: Tensor | float,
               *, world_size: int | None = None, max_tokens: int | None = None) -> Tensor:
    """One micro-batch's share of the global loss, for DDP:

        L_mb = W · Σ_{i ∈ mb} num_i / C,

    with (num, cnt) from :func:`row_terms`, C from :func:`global_normaliser` and W =
    ``world_size`` (default: the process group's, 1 without one). Summed over a rank's
    micro-batches (gradient accumulation) and averaged over the W ranks by DDP, the losses,
    and so the gradients, are the single-process aggregation of the whole batch. The factor W
    undoes DDP's average (verl's ``* dp_size``; TRL divides the count by ``num_processes``).
    ``per_token_loss``/``mask`` (B, T) (the mask may be all zero: the share is then 0, still
    differentiable, as DDP needs a backward pass on every rank). Returns a 0-dim tensor in the
    loss's dtype. Factor of J(θ): reward (the aggregation's weights, kept equal to one
    process's).
    """
    num, _ = row_terms(per_token_loss, mask, aggregation, max_tokens)
    W = _world()[0] if world_size is None else check_positive_int(world_size, "world_size")
    if isinstance(normaliser, Tensor) and (normaliser.is_complex() or
                                           normaliser.dtype == torch.bool):
        raise ValueError(f"normaliser: expected a real count (an integer or floating tensor or "
                         f"a number), got dtype {normaliser.dtype}")
    c = torch.as_tensor(check_number(normaliser, "normaliser"), dtype=num.dtype,
                        device=num.device) \
        if not isinstance(normaliser, Tensor) else normaliser.to(num.dtype)
    if c.dim() != 0:
        raise ValueError(f"normaliser: expected a scalar (0-dim tensor or number), got shape "
                         f"{tuple(c.shape)}")
    if c.device != num.device:
        raise ValueError(f"normaliser: expected it on the loss's device {num.device}, got "
                         f"{c.device}")
    if not _is_meta(c) and not bool(torch.isfinite(c) & (c > 0)):
        raise ValueError(f"normaliser: expected a positive finite count, got {float(c)}")
    return (num.sum() * W / c).to(per_token_loss.dtype)


def _local_loss(num: Tensor, cnt: Tensor, micro_batches: int) -> Tensor:
    """The per-shard mean Σ num / Σ cnt / M (0 for a shard with nothing to average)."""
    n, c = num.sum(), cnt.sum()
    return torch.where(c > 0, n / torch.where(c > 0, c, torch.ones_like(c)), n * 0) / micro_batches


@reject_unknown_options
def data_parallel_loss(per_token_loss: Tensor, mask: Tensor, aggregation: str, shards: Tensor, *,
                       world_size: int, micro_batches: int = 1, normalisation: str = "global",
                       max_tokens: int | None = None) -> Tensor:
    """The loss whose gradient W DDP ranks with M micro-batches each produce, computed in one
    process (so it can be compared with the single-process loss exactly):

        global:  (1/W) Σ_k W Σ_{i∈k} num_i / Σ_i cnt_i  =  Σ_i num_i / Σ_i cnt_i
        local:   (1/W) Σ_k (1/M) Σ_{i∈k} num_i / Σ_{i∈k} cnt_i        (the per-rank-mean pitfall)

    over the W·M shards k (:func:`row_terms`). ``shards`` (B,) long: the shard of each row,
    rank·M + micro-batch, in [0, W·M) (:func:`group_layout` builds the book's layout);
    ``normalisation``: ``"global"`` (the all-reduced count, :func:`shard_loss`) or
    ``"local"`` (each shard divides by its own count; an empty shard contributes 0).
    ``per_token_loss``/``mask`` (B, T). The token weights of either loss are its gradient with
    respect to ``per_token_loss`` (e.g. :func:`pgbook.aggregation.token_weights` style). A
    0-dim tensor in the loss's dtype. Factor of J(θ): reward (the weight of each token term).
    """
    num, cnt = row_terms(per_token_loss, mask, aggregation, max_tokens)
    W = check_positive_int(world_size, "world_size")
    M = check_positive_int(micro_batches, "micro_batches")
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation: expected one of {NORMALISATIONS}, got {normalisation!r}")
    check_tensor(shards, "shards", ndim=1)
    if shards.shape[0] != num.shape[0]:
        raise ValueError(f"shards: expected one shard id per row ({num.shape[0]}), got shape "
                         f"{tuple(shards.shape)}")
    check_same_device(per_token_loss=per_token_loss, shards=shards)
    S = W * M
    check_index(shards, "shards", S)
    num_k = num.new_zeros(S).index_add(0, shards, num)
    cnt_k = cnt.new_zeros(S).index_add(0, shards, cnt)
    if normalisation == "global":
        total = cnt.sum()
        if not _is_meta(total) and not bool(total > 0):
            raise ValueError("mask: the batch has no response in the loss (nothing to average)")
        loss = (W * num_k / total).sum() / W
    else:
        safe = torch.where(cnt_k > 0, cnt_k, torch.ones_like(cnt_k))
        loss = torch.where(cnt_k > 0, num_k / safe, num_k * 0).sum() / (W * M)
    return loss.to(per_token_loss.dtype)


@reject_unknown_options
def group_layout(n_groups: int, group_size: int, world_size: int, micro_batches: int = 1, *,
                 device: torch.device | str = "cpu") -> Tensor:
    """The shard of every response, (B,) long with B = ``n_groups`` · G: groups stay whole and
    contiguous; rank r holds groups [r·n/W, (r+1)·n/W), split into M contiguous micro-batches;
    shard id = rank·M + micro-batch (the layout of :func:`ddp_grpo_train`). W must divide
    ``n_groups`` and M the groups per rank (equal shards, as DDP's collectives need)."""
    n = check_positive_int(n_groups, "n_groups")
    G = check_positive_int(group_size, "group_size")
    W = check_positive_int(world_size, "world_size")
    M = check_positive_int(micro_batches, "micro_batches")
    if n % W:
        raise ValueError(f"world_size: expected a divisor of n_groups = {n} (every rank holds "
                         f"the same number of whole groups), got {W}")
    if (n // W) % M:
        raise ValueError(f"micro_batches: expected a divisor of the {n // W} groups per rank, "
                         f"got {M}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected a torch.device or a name such as 'cpu', got "
                         f"{device!r}") from None
    g = torch.arange(n, device=device)
    per_rank, per_mb = n // W, n // (W * M)
    shard = (g // per_rank) * M + (g % per_rank) // per_mb
    return shard.repeat_interleave(G)


@reject_unknown_options
def token_losses(logp: Tensor, old_logp: Tensor | None, advantages_tok: Tensor, mask: Tensor, *,
                 loss: str = "ppo_clip", eps_low: float | None = None,
                 eps_high: float | None = None, ref_logp: Tensor | None = None, kl: str = "none",
                 beta: float = 0.0, loss_options: dict | None = None) -> Tensor:
    """The per-token terms ℓ_it that :func:`pgbook.methods.policy_loss` aggregates, (B, T):

        ℓ_it = m_it · [ ℓ_loss(logp, Â, old_logp)_it + β · k_kl(logp, ref_logp)_it ],

    zero off the mask (padding may hold −inf or NaN without reaching the loss or its
    gradient). Same arguments as :func:`pgbook.methods.policy_loss` (``loss_options`` the
    extra options of the policy loss, e.g. ``{"dual_clip": 3.0}``), so that
    ``aggregate(token_losses(...), mask, a) == policy_loss(..., aggregation=a)[0]``; a
    distributed trainer needs the terms before the aggregation, to divide by a global count.
    dtype of ``logp``. Factor of J(θ): trajectory (the loss) and, with the KL, both.
    """
    check_tensor(logp, "logp", ndim=2, floating=True)
    _methods._check_bt(advantages_tok, "advantages_tok", logp)
    _methods._check_bt(mask, "mask", logp, floating=False)
    check_same_device(logp=logp, advantages_tok=advantages_tok, mask=mask)
    check_mask(mask, "mask", allow_all_zero=True)    # a micro-batch may hold no loss token
    check_finite_where(advantages_tok, mask, "advantages_tok")
    if loss_options is not None and not isinstance(loss_options, dict):
        raise ValueError(f"loss_options: expected a dict of the policy loss's options or None, "
                         f"got {type(loss_options).__name__}")
    if old_logp is None:
        old_logp = logp.detach()
    _methods._check_bt(old_logp, "old_logp", logp)
    check_same_device(logp=logp, old_logp=old_logp)
    beta = check_positive(beta, "beta", allow_zero=True)
    loss_fn = resolve("policy_loss", loss, "token", what="loss")
    if kl != "none":
        if get("kl", kl).form != "token":
            raise ValueError(f"kl: expected 'none' or a KL term of the loss ('k1_loss', "
                             f"'k2_loss', 'k3_loss'), got {kl!r} (a KL in the reward is applied "
                             f"to the rewards before the advantages)")
        if ref_logp is None:
            raise ValueError(f"ref_logp: kl={kl!r} needs the reference log-probs")
        _methods._check_bt(ref_logp, "ref_logp", logp)
        check_same_device(logp=logp, ref_logp=ref_logp)
    elif beta > 0:
        raise ValueError(f"beta: expected 0 when kl='none', got {beta}")
    options = _methods._options_for(loss_fn, loss, {"eps_low": eps_low, "eps_high": eps_high,
                                                    **(loss_options or {})}, token_losses)
    m = mask.to(torch.bool)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    lp = torch.where(m, logp, zero)
    old = torch.where(m, old_logp.detach().to(logp.dtype), zero)
    adv = torch.where(m, advantages_tok.detach().to(logp.dtype), zero)
    per_token = loss_fn(lp, adv, old, **options)
    if kl != "none":
        ref = torch.where(m, ref_logp.detach().to(logp.dtype), zero)
        per_token = per_token + beta * get("kl", kl).fn(lp, ref)
    return torch.where(m, per_token, zero)


# =============================================================================================
# The trainer: GRPO on W ranks with DDP
# =============================================================================================
@dataclass
class DDPHistory:
    """What :func:`ddp_grpo_train` records (float64 CPU tensors; rank 0's copy, identical on
    every rank).

    * ``reward`` (steps,): mean task reward of the step's whole batch (all ranks);
    * ``loss`` (steps,): the global loss, averaged over the step's optimiser steps;
    * ``tokens`` (steps, W): the loss tokens each rank held (how unequal the ranks were);
    * ``loss_first``: the global loss of the very first optimiser step, and ``grad_first``
      (P,) its gradient as DDP synchronised it (before any norm clipping);
    * ``grad_first_local`` (P,): with ``record_local=True``, the gradient DDP gives the same
      first step when every micro-batch divides by its own count (the pitfall), else None;
    * ``params_first`` (P,): the parameters after the first optimiser step; ``params`` (P,)
      at the end (P: the model's parameters, flattened in ``model.parameters()`` order);
    * ``world_size`` and ``config`` (the run's settings).
    """

    reward: Tensor
    loss: Tensor
    tokens: Tensor
    loss_first: Tensor
    grad_first: Tensor
    grad_first_local: Tensor | None
    params_first: Tensor
    params: Tensor
    world_size: int
    config: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.reward.shape[0]


def _flat(tensors) -> Tensor:
    return torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in tensors])


def _flat_grad(model: nn.Module) -> Tensor:
    return _flat(p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters())


def _rollout(model, task, prompts: Tensor, targets: Tensor, seeds: Tensor, groups: range, G: int,
             tau: float) -> tuple[Tensor, Tensor, Tensor]:
    """Sample the G responses of each group in ``groups``, each group with its own generator
    (seeded by ``seeds[g]``), so that a group's responses do not depend on which rank samples
    it or with which other groups: (tokens (B, T), mask (B, T), targets (B, N))."""
    device = prompts.device
    toks, masks = [], []
    for g in groups:           # one batched draw per group: the generator is the group's own
        s = sample(model, prompts[g:g + 1].expand(G, -1), task.max_new_tokens,
                   make_generator(int(seeds[g]), device), tau)
        toks.append(s.tokens)
        masks.append(s.mask)
    return (torch.cat(toks), torch.cat(masks),
            targets[groups.start:groups.stop].repeat_interleave(G, 0))


def _check_run(a: dict, W: int, *, objects: bool = True) -> dict:
    """Validate the arguments ``a`` of :func:`ddp_grpo_train` (all of them, by name) for W
    ranks; ``objects=False`` skips the model and the task (the command line checks its
    numbers before building them). Returns the normalised values. Raises ValueError."""
    model, task, method, seed = a["model"], a["task"], a["method"], a["seed"]
    if objects:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected a torch.nn.Module (a pgbook.worlds.gpt.GPT), got "
                             f"{type(model).__name__}")
        for name in ("sample", "reward", "max_new_tokens", "prompt_len"):
            if not hasattr(task, name):
                raise ValueError(f"task: expected a pgbook.worlds.tasks.Task (with .{name}), got "
                                 f"{type(task).__name__}")
        ref_model = a["ref_model"]
        if ref_model is not None and not isinstance(ref_model, nn.Module):
            raise ValueError(f"ref_model: expected None or a torch.nn.Module (a frozen GPT), got "
                             f"{type(ref_model).__name__}")
        if ref_model is not None and ref_model is model:
            raise ValueError("ref_model: expected a separate frozen model, got the trained model "
                             "itself (its KL would always be 0)")
    for name in ("partial_reward", "record_local", "progress"):
        check_flag(a[name], name)
    steps = check_positive_int(a["steps"], "steps")
    n_prompts = check_positive_int(a["prompts_per_step"], "prompts_per_step")
    G = check_positive_int(a["group_size"], "group_size")
    if G < 2:
        raise ValueError(f"group_size: expected at least 2 responses per prompt, got {G}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    mu = check_positive_int(a["epochs_per_batch"], "epochs_per_batch")
    M = check_positive_int(a["micro_batches"], "micro_batches")
    normalisation = a["normalisation"]
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation: expected one of {NORMALISATIONS}, got {normalisation!r}")
    beta = check_positive(a["beta"], "beta", allow_zero=True)
    lr = check_positive(a["lr"], "lr")
    max_grad_norm = a["max_grad_norm"]
    if max_grad_norm is not None:
        max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    tau = check_positive(a["temperature"], "temperature")
    for name, eps in (("eps_low", a["eps_low"]), ("eps_high", a["eps_high"])):
        if eps is not None:
            check_positive(eps, name)
    if n_prompts % W:
        raise ValueError(f"prompts_per_step: expected a multiple of the world size {W} (every "
                         f"rank holds the same number of whole groups), got {n_prompts}")
    k = n_prompts // W
    if k % M:
        raise ValueError(f"micro_batches: expected a divisor of the {k} groups per rank, got {M}")
    param = device = None
    if objects:
        device = _model_device(model)
        param = next(model.parameters())

    _methods.method(method)                      # an unknown name: "method: ..."
    try:
        cfg = _resolve(method, {"advantage": None, "policy_loss": None, "aggregation": None,
                                "kl": None})
    except ValueError as e:
        raise ValueError(f"method: expected a language-model method of the GRPO family (a group "
                         f"advantage), got {method!r}: {e}") from None
    agg = _aggregation_name(cfg["aggregation"])
    kl_name = cfg["kl"]
    if kl_name == "kl_penalty":
        raise ValueError(f"method: {method!r} uses PPO's KL penalty to π_old (chapter 07), not a "
                         f"KL to a reference")
    if kl_name == "none" and beta > 0:
        raise ValueError(f"beta: method {method!r} has no KL term (kl='none'), so beta must be "
                         f"0, got {beta}")
    in_reward = get("kl", kl_name).form == "reward"
    kl_loss = "none" if in_reward else kl_name
    parts = _methods.method(method).resolved_parts()
    shaping_fn = _piece("shaping", parts.get("shaping"), "rollout")
    credit_fn = _piece("token_credit", parts.get("token_credit"), "entropy")
    adv_options = {} if a["std_eps"] is None else \
        {"std_eps": check_positive(a["std_eps"], "std_eps", allow_zero=True)}
    advantage_options = a["advantage_options"]
    if advantage_options is not None:
        if not isinstance(advantage_options, dict) or "std_eps" in advantage_options:
            raise ValueError(f"advantage_options: expected a dict of estimator options (std_eps "
                             f"has its own argument), got {advantage_options!r}")
        adv_options.update(advantage_options)
    return dict(steps=steps, n_prompts=n_prompts, G=G, mu=mu, M=M, beta=beta, lr=lr,
                max_grad_norm=max_grad_norm, tau=tau, k=k, device=device, param=param, cfg=cfg,
                agg=agg, kl_name=kl_name, in_reward=in_reward, kl_loss=kl_loss,
                shaping_fn=shaping_fn, credit_fn=credit_fn, adv_options=adv_options)


@reject_unknown_options
def ddp_grpo_train(model: nn.Module, task: Task, *, steps: int, prompts_per_step: int,
                   group_size: int, seed: int, method: str = "GRPO", beta: float = 0.0,
                   ref_model: nn.Module | None = None,
                   epochs_per_batch: int = 1, micro_batches: int = 1,
                   eps_low: float | None = None, eps_high: float | None = None, lr: float = 1e-3,
                   max_grad_norm: float | None = 1.0, temperature: float = 1.0,
                   std_eps: float | None = None, partial_reward: bool = False,
                   normalisation: str = "global", record_local: bool = False,
                   advantage_options: dict | None = None, progress: bool = False) -> DDPHistory:
    """Train ``model`` in place with a GRPO-family method on every rank of the initialised
    process group (or in one process without one); returns a :class:`DDPHistory`.

    One step on W ranks (rank r holds the prompts [r·n/W, (r+1)·n/W) of the n =
    ``prompts_per_step``, and all G = ``group_size`` responses of each):

    1. every rank draws the same n prompts and n group seeds from a generator seeded with
       ``seed``; each rank samples its own groups, each group with its own generator;
    2. rewards (the task's verifier), log π_old (the trainer's own forward pass, so the first
       ratios are exactly 1), log π_ref and the entropies are computed on the rank's rows and
       all-gathered: shaping, the KL in the reward, the advantages and token credit see the
       whole batch, as in :func:`pgbook.train.grpo.grpo_train`; each rank keeps its rows;
    3. μ = ``epochs_per_batch`` optimiser steps on the whole batch: the global normaliser is
       all-reduced first (:func:`global_normaliser`); each of the rank's M = ``micro_batches``
       micro-batches adds the gradient of its :func:`shard_loss` (under DDP's ``no_sync`` until
       the last, whose backward pass averages the ranks' gradients); the gradient norm is
       clipped and AdamW steps (β = (0.9, 0.99), no weight decay, like ``grpo_train``).

    ``normalisation="local"`` trains with the pitfall instead (each micro-batch's own mean,
    divided by M, averaged over ranks by DDP). ``record_local=True`` records, for the first
    optimiser step, the gradient the pitfall would give (with ``normalisation="global"`` by one
    extra pass through DDP, whose gradient is then discarded). Other arguments as
    :func:`pgbook.train.grpo.grpo_train`: ``method``'s pieces (its aggregation must be one of
    the four built-in ones), ``beta``, the clip range, ``lr``, ``max_grad_norm``,
    ``temperature``, ``std_eps``, ``partial_reward``, ``advantage_options``; ``progress``
    prints one line per step on rank 0. Differences from ``grpo_train``: the batch is sampled
    group by group (so it is not ``grpo_train``'s batch for the same seed), each optimiser step
    uses the whole batch (no shuffled minibatches: ``micro_batches`` splits the work, not the
    update), and ``seed`` replaces the generator. The model must be on the rank's device
    (``cuda:<local rank>`` with NCCL); W must divide n, and M the groups per rank.
    """
    from torch.nn.parallel import DistributedDataParallel

    W, rank = _world()
    c = _check_run(dict(model=model, task=task, steps=steps, prompts_per_step=prompts_per_step,
                        group_size=group_size, seed=seed, method=method, beta=beta,
                        ref_model=ref_model, epochs_per_batch=epochs_per_batch,
                        micro_batches=micro_batches, eps_low=eps_low, eps_high=eps_high, lr=lr,
                        max_grad_norm=max_grad_norm, temperature=temperature, std_eps=std_eps,
                        partial_reward=partial_reward, normalisation=normalisation,
                        record_local=record_local, advantage_options=advantage_options,
                        progress=progress), W)
    steps, n_prompts, G, mu, M, beta, lr = (c[k] for k in ("steps", "n_prompts", "G", "mu", "M",
                                                           "beta", "lr"))
    max_grad_norm, tau, k, device, param = (c[k] for k in ("max_grad_norm", "tau", "k", "device",
                                                           "param"))
    cfg, agg, kl_name, in_reward, kl_loss = (c[k] for k in ("cfg", "agg", "kl_name", "in_reward",
                                                            "kl_loss"))
    shaping_fn, credit_fn, adv_options = c["shaping_fn"], c["credit_fn"], c["adv_options"]
    if ref_model is None:
        ref_model = copy.deepcopy(model)
    elif ref_model is model:
        raise ValueError("ref_model: expected a separate frozen model, got the trained model "
                         "itself (its KL would always be 0)")
    ref_model.requires_grad_(False)

    if _dist() is None:
        net, ddp = model, None
    else:                      # the engine users already have: DDP averages the ranks' gradients
        ddp = DistributedDataParallel(model, device_ids=None if device.type == "cpu" else [device])
        net = ddp
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    master = make_generator(seed, device)
    N = task.max_new_tokens
    mine = range(rank * k, (rank + 1) * k)
    local = slice(rank * k * G, (rank + 1) * k * G)
    rows_mb = k * G // M
    atol = _on_policy_atol(param.dtype)
    rec: dict = {"reward": [], "loss": [], "tokens": []}
    first: dict = {}

    def gradients(batch: dict, norm: Tensor | None, how: str, check: bool) -> Tensor:
        """Accumulate one optimiser step's gradient over the M micro-batches (DDP averages the
        ranks on the last backward pass); returns the global loss (0-dim)."""
        total = None
        for j in range(M):
            rows = slice(j * rows_mb, (j + 1) * rows_mb)
            with contextlib.nullcontext() if ddp is None or j == M - 1 else ddp.no_sync():
                lp = logprobs(net, batch["tokens"][rows], tau)
                if check and j == 0:       # on-policy before the first update: ratios are 1
                    check_on_policy(lp, batch["old"][rows], batch["mask"][rows], atol)
                per_tok = token_losses(
                    lp, batch["old"][rows], batch["adv_tok"][rows], batch["loss_mask"][rows],
                    loss=cfg["policy_loss"], eps_low=eps_low, eps_high=eps_high,
                    ref_logp=batch["ref"][rows] if kl_loss != "none" else None, kl=kl_loss,
                    beta=beta if kl_loss != "none" else 0.0)
                if how == "global":
                    value = shard_loss(per_tok, batch["loss_mask"][rows], agg, norm,
                                       world_size=W, max_tokens=N)
                else:
                    num, cnt = row_terms(per_tok, batch["loss_mask"][rows], agg, N)
                    value = _local_loss(num, cnt, M).to(per_tok.dtype)
                value.backward()
            total = value.detach() if total is None else total + value.detach()
        return _all_reduce_sum(total) / W

    t0 = time.perf_counter()
    for step in range(steps):
        # 1. the same prompts and group seeds on every rank; each rank samples its groups
        prob = task.sample(n_prompts, master)
        seeds = torch.randint(0, 2**62, (n_prompts,), generator=master, device=device)
        tokens, mask, targets = _rollout(model, task, prob.prompts, prob.targets, seeds, mine, G,
                                         tau)
        # 2. rewards and log-probs on the rank's rows, gathered: advantages on the whole batch
        with torch.no_grad():
            old, ent = _trainer_logprobs(model, tokens, tau)
            ref = logprobs(ref_model, tokens, tau).to(old.dtype)
            R = task.reward(tokens, targets, partial=partial_reward, dtype=old.dtype)
            trunc = truncated_responses(tokens, mask, EOS)
            R_all, mask_all, old_all, ref_all, ent_all, trunc_all = (
                _all_gather(x) for x in (R, mask.to(old.dtype), old, ref, ent, trunc))
            R_used, loss_mask_all = R_all, mask_all
            if shaping_fn is not None:
                R_used, loss_mask_all = shaping_fn(R_all, mask_all, truncated=trunc_all,
                                                   max_tokens=N)
            shaped = _methods.shaped_rewards(kl_name, R_used, old_all, ref_all, mask_all, beta) \
                if in_reward and beta > 0 else R_used
            adv = _adv.compute_advantages(shaped, cfg["advantage"], group_size=G, mask=mask_all,
                                          **adv_options)
            adv_tok = adv.to(old.dtype) * loss_mask_all if adv.dim() == 2 else \
                _adv.broadcast_to_tokens(adv.to(old.dtype), loss_mask_all)
            if credit_fn is not None and bool(loss_mask_all.any()):
                adv_tok = credit_fn(adv_tok, ent_all, loss_mask_all, group_size=G)
        batch = dict(tokens=tokens, old=old, ref=ref, mask=mask, adv_tok=adv_tok[local],
                     loss_mask=loss_mask_all[local])
        # 3. the global normaliser first, then μ optimiser steps on the whole batch
        norm = global_normaliser(batch["loss_mask"], agg, max_tokens=N)
        losses = []
        for epoch in range(mu):
            if step == 0 and epoch == 0 and record_local and normalisation == "global":
                opt.zero_grad(set_to_none=True)
                gradients(batch, norm, "local", check=False)
                first["grad_local"] = _flat_grad(model)
            opt.zero_grad(set_to_none=True)
            value = gradients(batch, norm, normalisation, check=epoch == 0)
            if "grad" not in first:
                first.update(grad=_flat_grad(model), loss=value.detach().to("cpu", torch.float64))
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            first.setdefault("params", _flat(model.parameters()))
            losses.append(float(value))
        rec["reward"].append(float(R_all.to(torch.float64).mean()))
        rec["loss"].append(sum(losses) / len(losses))
        rec["tokens"].append(_all_gather(batch["loss_mask"].to(torch.float64).sum().reshape(1))
                             .to("cpu"))
        if progress and rank == 0:
            print(f"step {step}: reward {rec['reward'][-1]:.4f}, loss {rec['loss'][-1]:+.6f}, "
                  f"loss tokens per rank {[int(x) for x in rec['tokens'][-1]]}, "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    if record_local and normalisation == "local":
        first["grad_local"] = first["grad"]
    config = dict(method=method, **cfg, beta=beta, group_size=G, prompts_per_step=n_prompts,
                  epochs_per_batch=mu, micro_batches=M, eps_low=eps_low, eps_high=eps_high,
                  lr=lr, max_grad_norm=max_grad_norm, temperature=tau, seed=seed,
                  partial_reward=partial_reward, normalisation=normalisation, task=repr(task))
    return DDPHistory(
        reward=torch.tensor(rec["reward"], dtype=torch.float64),
        loss=torch.tensor(rec["loss"], dtype=torch.float64),
        tokens=torch.stack(rec["tokens"]), loss_first=first["loss"], grad_first=first["grad"],
        grad_first_local=first.get("grad_local"), params_first=first["params"],
        params=_flat(model.parameters()), world_size=W, config=config)


# =============================================================================================
# Starting the processes: torch.multiprocessing here, torchrun from a shell
# =============================================================================================
def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def _worker(rank: int, nproc: int, init_file: str, model, ref_model, task, runs: list,
            out_file: str, device: str, timeout_s: float) -> None:
    """One rank: join the process group, run every run of ``runs`` from a fresh copy of
    ``model``, and (rank 0) save the histories."""
    import torch.distributed as dist

    torch.set_num_threads(1)   # W ranks share the machine's cores
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", rank)
        torch.cuda.set_device(dev)
    dist.init_process_group(_backend(dev), init_method=f"file://{init_file}", rank=rank,
                            world_size=nproc, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        histories = []
        for kw in runs:
            m = copy.deepcopy(model).to(dev)
            ref = None if ref_model is None else copy.deepcopy(ref_model).to(dev)
            histories.append(ddp_grpo_train(m, task, ref_model=ref, **kw))
        if rank == 0:
            torch.save(histories, out_file)
    finally:
        dist.destroy_process_group()


@reject_unknown_options
def launch(model: nn.Module, task: Task, runs: list[dict], *, nproc: int,
           ref_model: nn.Module | None = None,
           device: str = "cpu", start_method: str | None = None,
           timeout_s: float = 300.0) -> list[DDPHistory]:
    """Run :func:`ddp_grpo_train` on ``nproc`` processes (ranks) of this machine and return
    rank 0's histories, one per entry of ``runs`` (each a dict of ``ddp_grpo_train``'s keyword
    arguments; every run starts from a copy of ``model``).

    The processes are started with ``torch.multiprocessing`` and join one process group
    (gloo on the CPU, NCCL with ``device="cuda"``: rank r on ``cuda:r``) through a file in a
    fresh temporary directory. ``start_method``: ``"fork"`` (the default on Linux with a CPU
    device: the ranks inherit the already imported torch and pgbook, and start in a fraction
    of a second) or ``"spawn"`` (the default elsewhere, and needed for CUDA: each rank imports
    torch anew, a few seconds). A rank that fails raises here with its traceback; collectives
    time out after ``timeout_s`` seconds. From a shell, ``python -m pgbook.train.distributed
    --nproc 2`` calls this function, and ``torchrun`` runs :func:`ddp_grpo_train` directly.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    nproc = check_positive_int(nproc, "nproc")
    if not dist.is_available():
        raise ValueError("nproc: torch.distributed is not available in this build of torch")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'cpu' (gloo) or 'cuda' (NCCL), got {device!r}")
    if dev.type == "cpu" and not dist.is_gloo_available():
        raise ValueError("device: the gloo backend (CPU) is not available in this build of torch")
    if dev.type == "cuda" and (not torch.cuda.is_available() or torch.cuda.device_count() < nproc):
        raise ValueError(f"nproc: expected at most torch.cuda.device_count() = "
                         f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} "
                         f"ranks on device 'cuda' (one GPU per rank), got {nproc}")
    if not isinstance(runs, list | tuple) or not runs or not all(isinstance(r, dict) for r in runs):
        raise ValueError(f"runs: expected a non-empty list of dicts of ddp_grpo_train's keyword "
                         f"arguments, got {runs!r}")
    accepted = set(inspect.signature(ddp_grpo_train).parameters) - {"model", "task",
                                                                    "ref_model"}
    defaults = {k: p.default for k, p in inspect.signature(ddp_grpo_train).parameters.items()}
    for r in runs:
        unknown = sorted(set(r) - accepted)
        if unknown:
            raise ValueError(f"runs: ddp_grpo_train takes no option {unknown} (its options: "
                             f"{sorted(accepted)})")
        missing = sorted(k for k in accepted if k not in r and defaults[k] is inspect._empty)
        if missing:
            raise ValueError(f"runs: a run without ddp_grpo_train's required options {missing}")
        # every run's values, before a process starts (a bad one would fail in every rank)
        _check_run({**defaults, **r, "model": model, "task": task, "ref_model": ref_model},
                   nproc)
    timeout_s = check_positive(timeout_s, "timeout_s")
    methods_ok = set(mp.get_all_start_methods())
    if start_method is None:
        start_method = "fork" if (sys.platform.startswith("linux") and dev.type == "cpu"
                                  and "fork" in methods_ok) else "spawn"
    if start_method not in methods_ok:
        raise ValueError(f"start_method: expected one of {sorted(methods_ok)}, got "
                         f"{start_method!r}")
    if start_method == "fork":
        # DDP imports torch._dynamo when it is built: import it once here, so that the forked
        # ranks share it instead of each importing it
        importlib.import_module("torch._dynamo")
    model_cpu = copy.deepcopy(model).to("cpu")
    ref_cpu = None if ref_model is None else copy.deepcopy(ref_model).to("cpu")
    with tempfile.TemporaryDirectory(prefix="pgbook_ddp_") as tmp:
        out_file = os.path.join(tmp, "histories.pt")
        args = (nproc, os.path.join(tmp, "rendezvous"), model_cpu, ref_cpu, task, list(runs),
                out_file, device, float(timeout_s))
        with warnings.catch_warnings():  # Python ≥ 3.12 warns about fork() with threads
            warnings.simplefilter("ignore", DeprecationWarning)
            mp.start_processes(_worker, args=args, nprocs=nproc, join=True,
                               start_method=start_method)
        return torch.load(out_file, weights_only=False)


# =============================================================================================
# Carrying a composition to a real trainer: TRL, verl, OpenRLHF
# =============================================================================================
#: the trainers :func:`trainer_options` maps onto, and where their options are defined
TRAINERS = {
    "TRL": "huggingface/trl: GRPOConfig (trl/trainer/grpo_config.py) and RLOOConfig "
           "(trl/trainer/rloo_config.py); the losses in GRPOTrainer._compute_loss",
    "verl": "volcengine/verl: Hydra keys of verl/trainer/config/ppo_trainer.yaml (algorithm.*) "
            "and actor/actor.yaml (actor_rollout_ref.actor.*); the pieces in "
            "verl/trainer/ppo/core_algos.py",
    "OpenRLHF": "OpenRLHF/OpenRLHF: flags of openrlhf/cli/train_ppo_ray.py (the dotted names "
                "of 2026; older releases spell them --advantage_estimator, --init_kl_coef, "
                "--use_kl_loss, --kl_estimator, --eps_clip_low_high, --dual_clip, "
                "--max_epochs, --overlong_buffer_len)",
}


@dataclass(frozen=True)
class _Opt:
    """How one registered piece is set in one trainer: ``options`` (values starting with "$"
    are filled from the call), ``exact`` (the trainer computes what pgbook's piece computes,
    up to the constants in ``note``), ``only`` (the trainer classes that have it)."""

    options: dict
    note: str = ""
    exact: bool = True
    only: frozenset | None = None


_GRPO_T, _RLOO_T = frozenset({"GRPOTrainer"}), frozenset({"RLOOTrainer"})
_ACT = "actor_rollout_ref.actor."

_OPTIONS: dict[str, dict[tuple[str, str], _Opt]] = {
    "TRL": {
        ("advantage", "grpo"): _Opt({"scale_rewards": "group"}, "TRL adds 1e-4 to σ_G "
                                    "(pgbook's std_eps: 1e-6)", only=_GRPO_T),
        ("advantage", "grpo_mean"): _Opt({"scale_rewards": "none"}, only=_GRPO_T),
        ("advantage", "reinforce_pp_baseline"): _Opt(
            {"scale_rewards": "batch"}, "TRL divides the group-centred rewards by the std of the "
            "raw rewards over the batch's responses; pgbook (as verl and OpenRLHF) whitens them "
            "over the batch's tokens", exact=False, only=_GRPO_T),
        ("advantage", "group_mean_batch_std_seq"): _Opt(
            {"scale_rewards": "batch"}, "TRL divides by the std of the raw rewards over the "
            "batch; pgbook by the std of the group-centred rewards", exact=False, only=_GRPO_T),
        ("advantage", "rloo"): _Opt(
            {}, "RLOOTrainer clips the ratio of whole responses Π_t r_t, pgbook each token's "
            "ratio: they agree on a batch's first update, the only one with num_iterations=1",
            only=_RLOO_T),
        ("policy_loss", "ppo_clip"): _Opt({"epsilon": "$eps_low", "epsilon_high": "$eps_high"}),
        ("policy_loss", "ppo_dual_clip"): _Opt(
            {"epsilon": "$eps_low", "epsilon_high": "$eps_high", "delta": "$dual_clip"},
            "TRL's delta caps every ratio at δ: for A < 0 that is the dual clip at c = δ, for "
            "A > 0 it changes nothing once δ ≥ 1 + ε_high", only=_GRPO_T),
        ("policy_loss", "score_function"): _Opt(
            {"num_iterations": 1}, "no plain −Â·log π loss: with one optimiser step per "
            "generated batch (num_iterations=1, steps_per_generation = "
            "gradient_accumulation_steps) every ratio is 1 and the clipped loss has its gradient"),
        ("aggregation", "token_mean"): _Opt(
            {"loss_type": "dapo"}, "divides by the token count gathered over processes "
            "(num_items_in_batch / num_processes): the global token mean; loss_type='bnpo' is "
            "the per-process mean", only=_GRPO_T),
        ("aggregation", "seq_mean_token_mean"): _Opt({"loss_type": "grpo"}, only=_GRPO_T),
        ("aggregation", "seq_mean_token_sum"): _Opt(
            {}, "RLOOTrainer's loss is the mean over responses of the clipped sequence "
            "surrogate", only=_RLOO_T),
        ("aggregation", "constant"): _Opt(
            {"loss_type": "dr_grpo", "max_completion_length": "$max_tokens"}, only=_GRPO_T),
        ("kl", "none"): _Opt({"beta": 0.0}),
        ("kl", "k3_loss"): _Opt({"beta": "$beta"}, only=_GRPO_T),
        ("kl", "k1_in_reward"): _Opt({"beta": "$beta"}, "the k1 of the sampling policy summed "
                                     "over the response, subtracted from R", only=_RLOO_T),
        ("shaping", "overlong_mask"): _Opt(
            {"mask_truncated_completions": True}, "with loss_type='grpo', TRL's mean over "
            "responses still counts the masked ones (pgbook and verl leave them out)"),
        ("shaping", "overlong_soft"): _Opt(
            {"reward_funcs": "+ get_soft_overlong_punishment($max_tokens, $cache)"},
            "a reward function of trl.rewards, added to the task's"),
        ("token_credit", "top_entropy"): _Opt({"top_entropy_quantile": "$top_fraction"},
                                              only=_GRPO_T),
        ("data", "on_policy"): _Opt({"num_iterations": 1}),
        ("data", "behaviour_policy"): _Opt({}),
    },
    "verl": {
        ("advantage", "grpo"): _Opt({"algorithm.adv_estimator": "grpo",
                                     "algorithm.norm_adv_by_std_in_grpo": True}),
        ("advantage", "grpo_mean"): _Opt({"algorithm.adv_estimator": "grpo",
                                          "algorithm.norm_adv_by_std_in_grpo": False}),
        ("advantage", "reinforce_pp_baseline"): _Opt(
            {"algorithm.adv_estimator": "reinforce_plus_plus_baseline"}),
        ("advantage", "rloo"): _Opt({"algorithm.adv_estimator": "rloo"}),
        ("advantage", "remax"): _Opt({"algorithm.adv_estimator": "remax"}),
        ("advantage", "reinforce_plus_plus"): _Opt(
            {"algorithm.adv_estimator": "reinforce_plus_plus"}),
        ("advantage", "opo"): _Opt({"algorithm.adv_estimator": "opo"}),
        ("advantage", "gpg"): _Opt({"algorithm.adv_estimator": "gpg"}),
        ("advantage", "grpo_passk"): _Opt({"algorithm.adv_estimator": "grpo_passk"}),
        ("advantage", "gae"): _Opt({"algorithm.adv_estimator": "gae"},
                                   "with a critic (critic.* keys)"),
        ("policy_loss", "ppo_clip"): _Opt(
            {_ACT + "policy_loss.loss_mode": "vanilla", _ACT + "clip_ratio_low": "$eps_low",
             _ACT + "clip_ratio_high": "$eps_high"},
            "verl's vanilla loss also applies the dual clip (clip_ratio_c = 3) to tokens with "
            "A < 0: it binds only once a ratio exceeds 3", exact=False),
        ("policy_loss", "ppo_dual_clip"): _Opt(
            {_ACT + "policy_loss.loss_mode": "vanilla", _ACT + "clip_ratio_low": "$eps_low",
             _ACT + "clip_ratio_high": "$eps_high", _ACT + "clip_ratio_c": "$dual_clip"}),
        ("policy_loss", "score_function"): _Opt({_ACT + "policy_loss.loss_mode": "gpg"},
                                                "verl's gpg loss is −Â·log π_θ"),
        ("aggregation", "token_mean"): _Opt(
            {_ACT + "loss_agg_mode": "token-mean", "trainer.use_legacy_worker_impl": "disable"},
            "the engine workers (use_legacy_worker_impl=disable) divide by the all-reduced "
            "batch_num_tokens times dp_size: the global token mean; the legacy FSDP worker (the "
            "default 'auto' in the version read, January 2026) divides each micro-batch by its own "
            "token count: the per-rank mean"),
        ("aggregation", "seq_mean_token_mean"): _Opt(
            {_ACT + "loss_agg_mode": "seq-mean-token-mean",
             "trainer.use_legacy_worker_impl": "disable"},
            "the legacy FSDP worker averages each micro-batch over its own responses: exact only "
            "when every micro-batch holds as many responses in the loss"),
        ("aggregation", "seq_mean_token_sum"): _Opt(
            {_ACT + "loss_agg_mode": "seq-mean-token-sum",
             "trainer.use_legacy_worker_impl": "disable"},
            "the legacy FSDP worker averages each micro-batch over its own responses: exact only "
            "when every micro-batch holds as many responses in the loss"),
        ("aggregation", "constant"): _Opt(
            {_ACT + "loss_agg_mode": "seq-mean-token-sum-norm",
             _ACT + "loss_scale_factor": "$max_tokens"},
            "verl divides the token sum by loss_scale_factor only, not by the number of "
            "responses: a constant multiple of pgbook's loss (rescale the learning rate)",
            exact=False),
        ("kl", "none"): _Opt({_ACT + "use_kl_loss": False, "algorithm.use_kl_in_reward": False}),
        ("kl", "k1_loss"): _Opt({_ACT + "use_kl_loss": True, _ACT + "kl_loss_coef": "$beta",
                                 _ACT + "kl_loss_type": "k1"}),
        ("kl", "k2_loss"): _Opt({_ACT + "use_kl_loss": True, _ACT + "kl_loss_coef": "$beta",
                                 _ACT + "kl_loss_type": "k2"}),
        ("kl", "k3_loss"): _Opt({_ACT + "use_kl_loss": True, _ACT + "kl_loss_coef": "$beta",
                                 _ACT + "kl_loss_type": "low_var_kl"},
                                "verl clamps k3 to [−10, 10]"),
        ("kl", "k1_in_reward"): _Opt(
            {"algorithm.use_kl_in_reward": True, "algorithm.kl_penalty": "kl",
             "algorithm.kl_ctrl.kl_coef": "$beta", _ACT + "use_kl_loss": False},
            "verl subtracts β·k1 from each token's reward; its outcome estimators sum the token "
            "rewards first, which is pgbook's R − β Σ_t k1"),
        ("shaping", "overlong_soft"): _Opt(
            {"reward_model.reward_manager": "dapo",
             "+reward_model.reward_kwargs.overlong_buffer_cfg.enable": True,
             "+reward_model.reward_kwargs.overlong_buffer_cfg.len": "$cache",
             "+reward_model.reward_kwargs.overlong_buffer_cfg.penalty_factor": 1.0}),
        ("data", "on_policy"): _Opt({_ACT + "ppo_epochs": 1},
                                    "with actor.ppo_mini_batch_size equal to the batch size"),
        ("data", "behaviour_policy"): _Opt({}),
    },
    "OpenRLHF": {
        ("advantage", "grpo"): _Opt({"--algo.advantage.estimator": "group_norm"},
                                    "OpenRLHF adds 1e-9 to σ_G (pgbook's std_eps: 1e-6)"),
        ("advantage", "grpo_mean"): _Opt({"--algo.advantage.estimator": "dr_grpo"}),
        ("advantage", "reinforce_pp_baseline"): _Opt(
            {"--algo.advantage.estimator": "reinforce_baseline"}),
        ("advantage", "rloo"): _Opt({"--algo.advantage.estimator": "rloo"}),
        ("advantage", "reinforce_plus_plus"): _Opt({"--algo.advantage.estimator": "reinforce"}),
        ("advantage", "gae"): _Opt({"--algo.advantage.estimator": "gae"},
                                   "with a critic (--critic.* flags)"),
        ("policy_loss", "ppo_clip"): _Opt({"--actor.eps_clip_low_high": "$eps_low $eps_high"}),
        ("policy_loss", "ppo_dual_clip"): _Opt({"--actor.eps_clip_low_high": "$eps_low $eps_high",
                                                "--actor.dual_clip": "$dual_clip"}),
        ("policy_loss", "score_function"): _Opt(
            {"--train.max_epochs": 1}, "no plain −Â·log π loss: with one optimiser step per "
            "rollout batch every ratio is 1 and the clipped loss has its gradient"),
        ("aggregation", "token_mean"): _Opt(
            {}, "the only aggregation of the PPO loss (aggregate_loss with "
            "token_level_loss=True): the all-reduced token count times dp_size"),
        ("kl", "none"): _Opt({"--algo.kl.init_coef": 0.0}),
        ("kl", "k1_loss"): _Opt({"--algo.kl.use_loss": True, "--algo.kl.estimator": "k1",
                                 "--algo.kl.init_coef": "$beta"}),
        ("kl", "k2_loss"): _Opt({"--algo.kl.use_loss": True, "--algo.kl.estimator": "k2",
                                 "--algo.kl.init_coef": "$beta"}),
        ("kl", "k3_loss"): _Opt({"--algo.kl.use_loss": True, "--algo.kl.estimator": "k3",
                                 "--algo.kl.init_coef": "$beta"}),
        ("kl", "k1_in_reward"): _Opt(
            {"--algo.kl.estimator": "k1", "--algo.kl.init_coef": "$beta"},
            "OpenRLHF puts −β·k1 on each token's reward after the group baseline and sums it "
            "from t on (the KL still to come); pgbook subtracts the response's whole KL before "
            "the baseline", exact=False),
        ("shaping", "overlong_soft"): _Opt({"--reward.overlong_buffer_len": "$cache",
                                            "--reward.overlong_penalty_factor": 1.0}),
        ("data", "on_policy"): _Opt({"--train.max_epochs": 1},
                                    "with --train.batch_size equal to the rollout batch"),
        ("data", "behaviour_policy"): _Opt({}),
    },
}

_KINDS = ("advantage", "policy_loss", "aggregation", "kl", "shaping", "token_credit", "data")
_SYMBOLS = {"beta": "β", "eps_low": "ε_low", "eps_high": "ε_high", "max_tokens": "L_max",
            "dual_clip": "c", "cache": "L_cache", "top_fraction": "ρ"}


def _fill(value, params: dict):
    if not isinstance(value, str) or "$" not in value:
        return value
    if value.startswith("$") and value[1:] in params and " " not in value:
        return params[value[1:]]
    out = value
    for k in sorted(params, key=len, reverse=True):
        out = out.replace("$" + k, str(params[k]))
    return out


def _llm_parts(name: str) -> dict:
    m = method(name)
    parts = dict(m.resolved_parts())
    adv = parts.get("advantage")
    loss = parts.get("policy_loss")
    if get("advantage", adv).form not in ("group", "batch", "critic") or \
            get("policy_loss", loss).fn is None:
        raise ValueError(f"method: {name!r} is not a language-model method (its advantage "
                         f"{adv!r} and policy loss {loss!r} are not pieces of the LLM loss); "
                         f"expected a method whose advantage is a group, batch or critic "
                         f"estimator")
    parts["aggregation"] = _methods._AGG_ALIASES.get(parts["aggregation"], parts["aggregation"])
    parts.setdefault("kl", "none")
    return parts


@reject_unknown_options
def trainer_options(method_name: str, *, beta: float | None = None, eps_low: float | None = None,
                    eps_high: float | None = None, max_tokens: int | None = None) -> dict:
    """How to run the registered method ``method_name`` in TRL, verl and OpenRLHF.

    Returns ``{trainer: {"entry", "options", "notes", "missing", "exact"}}`` for each trainer
    of :data:`TRAINERS`: ``entry`` where the options go (TRL: ``"GRPOConfig"`` or
    ``"RLOOConfig"``; verl: Hydra overrides of ``python -m verl.trainer.main_ppo``; OpenRLHF:
    flags of ``python -m openrlhf.cli.train_ppo_ray``), ``options`` the option → value dict,
    ``notes`` where the trainer's piece differs from pgbook's or needs more settings,
    ``missing`` the pieces the trainer lacks (``"kind 'name'"``), and ``exact`` True when none is
    missing and every piece computes what pgbook's computes (up to the constants the notes
    give). Read off the method's pieces (:meth:`pgbook.registry.Method.resolved_parts`): a
    piece of yours, or one the table does not know, is listed as missing. Values left
    symbolic (β, ε, L_max, L_cache, ρ) are filled from the arguments where given; the clip
    range defaults to the policy loss's own (ε_high = ε_low), the dual clip to its c.
    """
    parts = _llm_parts(method_name)
    loss_fn = get("policy_loss", parts["policy_loss"]).fn
    sig = inspect.signature(loss_fn).parameters
    params = {k: v for k, v in _SYMBOLS.items()}
    if "eps_low" in sig:
        params["eps_low"] = sig["eps_low"].default if eps_low is None else \
            check_positive(eps_low, "eps_low")
        params["eps_high"] = params["eps_low"] if eps_high is None else \
            check_positive(eps_high, "eps_high")
    if "dual_clip" in sig and sig["dual_clip"].default is not None:
        params["dual_clip"] = sig["dual_clip"].default
    if beta is not None:
        params["beta"] = check_positive(beta, "beta", allow_zero=True)
    if max_tokens is not None:
        params["max_tokens"] = check_positive_int(max_tokens, "max_tokens")
    for k in ("shaping", "token_credit"):
        comp = parts.get(k)
        if comp is not None and get(k, comp).fn is not None:
            sp = inspect.signature(get(k, comp).fn).parameters
            if "top_fraction" in sp:
                params["top_fraction"] = sp["top_fraction"].default
    out = {}
    for trainer, table in _OPTIONS.items():
        options, notes, missing, exact = {}, [], [], True
        allowed = None
        for kind in _KINDS:
            name = parts.get(kind)
            if name is None:
                continue
            opt = table.get((kind, name))
            if opt is None:
                missing.append(f"{kind} {name!r}")
                continue
            if opt.only is not None:
                both = opt.only if allowed is None else allowed & opt.only
                if not both:
                    missing.append(f"{kind} {name!r} (only in {', '.join(sorted(opt.only))}, "
                                   f"not with the other pieces)")
                    continue
                allowed = both
            for key, value in opt.options.items():
                v = _fill(value, params)
                if key in options and options[key] != v:
                    missing.append(f"{kind} {name!r} (sets {key}={v!r}, another piece "
                                   f"{options[key]!r})")
                    continue
                options[key] = v
            if opt.note:
                notes.append(f"{kind} {name!r}: {opt.note}")
            exact = exact and opt.exact
        if trainer == "TRL":
            entry = "RLOOConfig" if allowed == _RLOO_T else "GRPOConfig"
        elif trainer == "verl":
            entry = "python -m verl.trainer.main_ppo"
        else:
            entry = "python -m openrlhf.cli.train_ppo_ray"
        out[trainer] = dict(entry=entry, options=options, notes=notes, missing=missing,
                            exact=exact and not missing)
    return out


def _render(trainer: str, entry: str, options: dict, short: bool) -> list[str]:
    def value(v):
        return f'"{v}"' if isinstance(v, str) and not v.replace(".", "").isdigit() \
            and trainer == "TRL" and not v.startswith("+ ") and v not in _SYMBOLS.values() \
            else str(v)

    lines = []
    for k, v in options.items():
        if trainer == "TRL":
            lines.append(f"{k}={value(v)}")
        elif trainer == "verl":
            key = k.replace(_ACT, "actor.") if short else k
            lines.append(f"{key}={str(v).lower() if isinstance(v, bool) else v}")
        else:
            lines.append(k if v is True else f"{k} {v}")
    return lines


def trainer_table(names: list[str] | None = None, *, markdown: bool = False,
                  beta: float | None = None, eps_low: float | None = None,
                  eps_high: float | None = None, max_tokens: int | None = None) -> list[dict] | str:
    """One row per method: its options in each trainer (:func:`trainer_options`).

    ``names`` default to every registered language-model method (advantage of a group, batch
    or critic form, a callable policy loss). Rows are dicts ``{"method", trainer: cell, ...}``
    with each cell the rendered options (TRL ``key=value`` of its config, verl Hydra
    overrides, OpenRLHF flags), ``≈`` in front when a piece differs and ``✗ kind 'name'`` for
    each missing piece. With ``markdown=True`` one Markdown table (verl's
    ``actor_rollout_ref.actor.`` shortened to ``actor.``), followed by the notes, numbered.
    """
    if names is None:
        names = []
        for m in methods():
            try:
                _llm_parts(m.name)
            except ValueError:
                continue
            names.append(m.name)
    check_flag(markdown, "markdown")
    if isinstance(names, str) or not isinstance(names, list | tuple) or \
            not all(isinstance(n, str) for n in names):
        raise ValueError(f"names: expected a list of method names, got {names!r}")
    rows, notes = [], []
    for name in names:
        opts = trainer_options(name, beta=beta, eps_low=eps_low, eps_high=eps_high,
                               max_tokens=max_tokens)
        row = {"method": name}
        for trainer, o in opts.items():
            lines = _render(trainer, o["entry"], o["options"], markdown)
            refs = []
            for n in o["notes"]:
                key = f"{trainer}, {n}"
                if key not in notes:
                    notes.append(key)
                refs.append(notes.index(key) + 1)
            head = ("" if o["exact"] or o["missing"] else "≈ ") + \
                ("RLOOConfig: " if o["entry"] == "RLOOConfig" else "")
            cell = {"lines": lines, "missing": o["missing"], "refs": refs, "head": head}
            row[trainer] = cell
        rows.append(row)
    if not markdown:
        return [{"method": r["method"], **{t: r[t]["head"] + "; ".join(
            r[t]["lines"] + [f"✗ {m}" for m in r[t]["missing"]]) for t in TRAINERS}}
            for r in rows]

    def cell(c):
        parts = [f"`{x}`" for x in c["lines"]] + [f"✗ {m}" for m in c["missing"]]
        refs = f" [{', '.join(map(str, c['refs']))}]" if c["refs"] else ""
        return (c["head"] + "<br>".join(parts) + refs).replace("|", "\\|")

    head = "| method | " + " | ".join(TRAINERS) + " |\n|---|" + "---|" * len(TRAINERS) + "\n"
    body = "\n".join(f"| {r['method']} | " + " | ".join(cell(r[t]) for t in TRAINERS) + " |"
                     for r in rows)
    foot = "\n\n" + "\n".join(f"{i + 1}. {n}" for i, n in enumerate(notes)) if notes else ""
    return head + body + foot


# =============================================================================================
# The script: python -m pgbook.train.distributed --nproc 2 ...   (or under torchrun)
# =============================================================================================
#: the tolerances of ``--check`` in float64: |Δ loss| (absolute), ‖Δ∇‖/‖∇‖, and max |Δθ| after
#: one AdamW step (its first step divides by |g| + 1e-8, which magnifies the last-bit
#: differences of near-zero gradient entries)
CHECK_TOLERANCES = {"loss": 1e-12, "grad": 1e-12, "params": 1e-10}


def _compare(h: DDPHistory, ref: DDPHistory) -> dict:
    return {"loss": float((h.loss_first - ref.loss_first).abs()),
            "grad": float((h.grad_first - ref.grad_first).norm()
                          / ref.grad_first.norm().clamp(min=torch.finfo(torch.float64).tiny)),
            "params": float((h.params_first - ref.params_first).abs().max()),
            "params_end": float((h.params - ref.params).abs().max())}


def _parser() -> argparse.ArgumentParser:
    from ..worlds.tasks import TASKS

    p = argparse.ArgumentParser(
        prog="python -m pgbook.train.distributed",
        description="GRPO-family training of the book's tiny GPT on N processes with "
                    "torch.distributed (gloo on CPUs, NCCL on GPUs) and DistributedDataParallel; "
                    "the loss is normalised by the global count, so N processes compute what "
                    "one does. Under torchrun (RANK and WORLD_SIZE set) each rank runs directly.")
    p.add_argument("--nproc", type=int, default=2, help="processes to start (default 2)")
    p.add_argument("--method", nargs="+", default=["GRPO"],
                   help="registered method(s), each run from the same start (default GRPO)")
    p.add_argument("--task", choices=sorted(TASKS), default="reverse")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (whole groups)")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--micro-batches", type=int, default=1,
                   help="micro-batches per rank (gradient accumulation)")
    p.add_argument("--epochs", type=int, default=1, help="optimiser steps per batch (μ)")
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient β")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-steps", type=int, default=200,
                   help="maximum-likelihood steps on noisy demonstrations before RL (default "
                        "200: the book's pretrained policy of chapters 11-12)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    p.add_argument("--normalisation", choices=NORMALISATIONS, default="global",
                   help="global: the all-reduced count (correct); local: each micro-batch's "
                        "own mean (the pitfall)")
    p.add_argument("--partial-reward", action="store_true", help="the task's partial credit")
    p.add_argument("--check", action="store_true",
                   help="also train in one process and compare (loss, gradient and parameters "
                        "after the first optimiser step); exit 1 beyond the float64 tolerances")
    p.add_argument("--out", help="save the initial model, the histories and the arguments here "
                                 "(torch.save)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line (``python -m pgbook.train.distributed --help``); returns the exit
    status. Builds the task's pretrained policy (:func:`pgbook.worlds.tasks.pretrained_policy`,
    ``--pretrain-steps``), runs every ``--method`` with :func:`ddp_grpo_train` on ``--nproc``
    processes (:func:`launch`), or directly on each rank under ``torchrun``, prints rank 0's
    record and, with ``--check``, compares with one process."""
    from ..worlds.tasks import TASKS, pretrained_policy

    if argv is not None and (not isinstance(argv, list | tuple)
                             or not all(isinstance(x, str) for x in argv)):
        raise ValueError(f"argv: expected None or a list of strings (the arguments, split), got "
                         f"{argv!r}")
    args = _parser().parse_args(argv)
    check_positive_int(args.nproc, "nproc")
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    defaults = {k: p.default for k, p in inspect.signature(ddp_grpo_train).parameters.items()}
    runs = [dict(steps=args.steps, prompts_per_step=args.prompts, group_size=args.group_size,
                 seed=args.seed, method=m, beta=args.beta, micro_batches=args.micro_batches,
                 epochs_per_batch=args.epochs, lr=args.lr, partial_reward=args.partial_reward,
                 normalisation=args.normalisation) for m in args.method]
    for r in runs:       # fail on a bad name or value here, not in N processes
        _check_run({**defaults, **r, "model": None, "task": None, "ref_model": None},
                   1 if torchrun else args.nproc, objects=False)
    dtype = getattr(torch, args.dtype)
    task = TASKS[args.task]()
    model, _ = pretrained_policy(task, seed=args.seed, steps=args.pretrain_steps, progress=False)
    model = model.to(dtype)
    initial = copy.deepcopy(model)
    if torchrun:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device(args.device if args.device == "cpu" else f"cuda:{local}")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(_backend(dev))
        nproc, rank = dist.get_world_size(), dist.get_rank()
        histories = [ddp_grpo_train(copy.deepcopy(model).to(dev), task,
                                    **dict(r, progress=rank == 0)) for r in runs]
        dist.destroy_process_group()
        if rank != 0:
            return 0
    else:
        nproc = args.nproc
        histories = launch(model, task, [dict(r, progress=True) for r in runs], nproc=nproc,
                           device=args.device)
    status = 0
    for r, h in zip(runs, histories):
        print(f"{r['method']}: {nproc} ranks × {args.micro_batches} micro-batch(es) each, "
              f"{args.normalisation} normalisation; final batch reward {float(h.reward[-1]):.4f}")
        if args.check:
            ref = ddp_grpo_train(copy.deepcopy(initial), task, **r)
            d = _compare(h, ref)
            ok = all(d[k] <= CHECK_TOLERANCES[k] for k in CHECK_TOLERANCES)
            print(f"  one process: |Δ loss| {d['loss']:.2e}, ‖Δ∇‖/‖∇‖ {d['grad']:.2e}, max |Δθ| "
                  f"after one step {d['params']:.2e}, after {h.steps} steps "
                  f"{d['params_end']:.2e}" + (f" ({'OK' if ok else 'FAILED'}: tolerances "
                  f"{CHECK_TOLERANCES})" if dtype == torch.float64 else " (float32: no tolerance)"))
            if dtype == torch.float64 and not ok:
                status = 1
    if args.out:
        torch.save({"initial_state": initial.state_dict(), "config": initial.config,
                    "histories": histories, "runs": runs, "args": vars(args)}, args.out)
        print(json.dumps({"saved": args.out}))
    return status


if __name__ == "__main__":
    # run the importable module's main, so that what the ranks pickle (DDPHistory, _worker)
    # is pgbook.train.distributed's and not __main__'s
    from pgbook.train.distributed import main as _main

    sys.exit(_main())
