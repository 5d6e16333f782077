"""Exercises of appendix A1 (scaling out on torch.distributed)."""

from __future__ import annotations

import torch

from ..aggregation import aggregate
from ..train.distributed import data_parallel_loss, group_layout, shard_loss
from . import Wrong, exercise, expect, expect_close, expect_loss, expect_shape, fmt_pair, near


def _shards(seed: int, empty: bool = False):
    """A batch of 4 ranks × 2 micro-batches × 3 responses of unequal lengths: per-token losses
    (NaN on the padding), the mask, and each row's shard (rank·M + micro-batch)."""
    g = torch.Generator().manual_seed(seed)
    W, M, rows, T = 4, 2, 3, 9
    B = W * M * rows
    loss = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T) < lengths[:, None]).to(torch.float64)
    if empty:        # responses left out of the loss (e.g. truncated, overlong filtering)
        mask[torch.tensor([1, 2, 7, 16])] = 0
    loss = torch.where(mask > 0, loss, torch.full_like(loss, float("nan")))
    return loss, mask, group_layout(W * M, rows, W, M), W, M


def _scalar(got, what: str) -> torch.Tensor:
    if isinstance(got, torch.Tensor) and got.dim() == 0 and got.is_floating_point():
        v = float(got.detach())
        expect(v == v and abs(v) != float("inf"), f"{what}: your loss is NaN or inf (the "
               "padding holds NaN: select the response tokens with torch.where(mask > 0, ...) "
               "before summing, and give an empty row 0, not 0/0)")
    return expect_loss(got, what)


def _grad_finite(got: torch.Tensor, x: torch.Tensor, what: str) -> None:
    (gx,) = torch.autograd.grad(got, x, allow_unused=True)
    expect(gx is not None, f"{what}: no gradient reaches per_token_loss: compute the loss from "
                           "it (no .detach(), no new tensor)")
    expect(bool(torch.isfinite(gx).all()), f"{what}: NaN in the gradient: the padding's NaN "
           "reached it (use torch.where, not a product with the mask)")


@exercise("A1.1", "A rank's share of the token-mean loss")
def check_token_share(fn):
    """``fn(per_token_loss, mask, global_tokens, world_size)``: one rank's micro-batch,
    ``per_token_loss`` and ``mask`` (B, T) float64 (NaN on the padding), ``global_tokens`` the
    0-dim number of response tokens of the whole batch (every rank, every micro-batch, already
    all-reduced) and ``world_size`` W. Return the scalar loss whose gradient, summed over the
    rank's micro-batches and averaged over the W ranks by DDP, is the gradient of the
    single-process token mean: W · Σ_{i,t} m_it ℓ_it / N_global. It must be differentiable."""
    for seed in (1, 2):
        loss, mask, shards, W, M = _shards(seed)
        N = mask.sum()
        total = 0.0
        for k in range(W * M):
            rows = shards == k
            x = loss[rows].clone().requires_grad_()
            got = _scalar(fn(x, mask[rows].clone(), N.clone(), W), f"shard {k}")
            v = float(got.detach())
            want = float(shard_loss(loss[rows], mask[rows], "token_mean", N, world_size=W))
            own = float(aggregate(loss[rows], mask[rows], "token_mean"))
            if near(got, own, atol=1e-12) and not near(got, want, atol=1e-12):
                raise Wrong(f"shard {k}: you divide by this micro-batch's own token count: that "
                            "is the per-rank mean, which weighs the tokens of a short shard more "
                            "than those of a long one; divide by the global count")
            if near(got * W, want, atol=1e-12) and not near(got, want, atol=1e-12):
                raise Wrong(f"shard {k}: off by a factor 1/W = 1/{W}: DDP *averages* the ranks' "
                            "gradients, so each rank's share must be W times its part of the sum")
            if not near(got, want, atol=1e-12):
                raise Wrong(f"shard {k}: {fmt_pair(want, v)} (W · Σ m·ℓ / N_global)")
            total += v / W
            _grad_finite(got, x, f"shard {k}")
        expect(near(torch.tensor(total, dtype=got.dtype), float(aggregate(loss, mask, "token_mean")),
                    atol=1e-12),
               "the shares, averaged over the ranks, do not add up to the token mean")
    return "W · Σ m·ℓ / N_global: DDP's average over ranks gives one process's token mean"


@exercise("A1.2", "What per-rank means do to the token weights")
def check_pitfall_factor(fn):
    """``fn(token_counts, world_size, micro_batches)``: ``token_counts`` (K,) float64, the
    response tokens of each of the K = W·M shards (rank r's micro-batch m is shard r·M + m).
    Every micro-batch computes its own token mean, divides it by M (gradient accumulation) and
    DDP averages the W ranks. Return the factor (K,) by which this multiplies the weight of a
    token of each shard, relative to the single-process token mean (1 everywhere when the
    shards hold equal counts)."""
    gen = torch.Generator().manual_seed(7)
    for W, M in ((2, 1), (2, 3), (4, 2), (1, 4)):
        K = W * M
        counts = torch.randint(3, 40, (K,), generator=gen).to(torch.float64)
        got = expect_shape(fn(counts.clone(), W, M), (K,), f"fn(counts, W={W}, M={M})")
        # the exact factor: the gradient of the pitfall's loss with respect to each token's
        # loss, over the single process's weight 1/N (one token per shard suffices)
        T = int(counts.max())
        mask = (torch.arange(T) < counts[:, None]).to(torch.float64)
        x = torch.zeros(K, T, dtype=torch.float64, requires_grad=True)
        (c,) = torch.autograd.grad(data_parallel_loss(x, mask, "token_mean", torch.arange(K),
                                                      world_size=W, micro_batches=M,
                                                      normalisation="local"), x)
        want = c[:, 0] * counts.sum()
        g = got.detach().to(torch.float64)
        if torch.allclose(g, 1 / want, rtol=1e-9) and not torch.allclose(want, 1 / want):
            raise Wrong(f"W={W}, M={M}: you return the inverse: a shard with fewer tokens than "
                        "average divides by a smaller count, so its tokens weigh *more*")
        expect_close(got, want, f"W={W}, M={M}", atol=1e-10, rtol=1e-9,
                     hint="a token of shard k gets 1/(W·M·n_k) instead of 1/N, N = Σ n_k")
    return "N / (W·M·n_k): each shard's tokens are reweighted by how full the shard happened to be"


@exercise("A1.3", "A rank's share of GRPO's per-sequence mean")
def check_sequence_share(fn):
    """``fn(per_token_loss, mask, global_sequences, world_size)``: one micro-batch as in A1.1,
    where some rows may be all zero (responses left out of the loss, e.g. by overlong
    filtering); ``global_sequences`` is the 0-dim number of responses with at least one token
    in the loss over the whole batch (all-reduced). Return the share whose DDP average is
    GRPO's ``seq_mean_token_mean`` of the whole batch: W · Σ_{i: L_i > 0} (Σ_t m_it ℓ_it / L_i)
    / B'_global, with L_i = Σ_t m_it. It must be differentiable (a 0-dim tensor)."""
    for seed in (3, 4):
        loss, mask, shards, W, M = _shards(seed, empty=True)
        n_seq = (mask.sum(1) > 0).sum().to(torch.float64)
        total = 0.0
        for k in range(W * M):
            rows = shards == k
            x = loss[rows].clone().requires_grad_()
            got = _scalar(fn(x, mask[rows].clone(), n_seq.clone(), W), f"shard {k}")
            v = float(got.detach())
            want = float(shard_loss(loss[rows], mask[rows], "seq_mean_token_mean", n_seq,
                                    world_size=W))
            sums = float(shard_loss(loss[rows], mask[rows], "seq_mean_token_sum", n_seq,
                                    world_size=W))
            if near(got, sums, atol=1e-12) and not near(got, want, atol=1e-12):
                raise Wrong(f"shard {k}: you sum each response's token terms (a token-sum "
                            "aggregation); GRPO averages them first: divide each response's sum "
                            "by its length L_i")
            local = float(aggregate(loss[rows], mask[rows], "seq_mean_token_mean")) \
                if bool(mask[rows].any()) else 0.0
            if near(got, local, atol=1e-12) and not near(got, want, atol=1e-12):
                raise Wrong(f"shard {k}: you average over this micro-batch's own responses: with "
                            "responses left out of the loss the shards hold unequal counts, and "
                            "the per-rank mean reweights them")
            if not near(got, want, atol=1e-12):
                raise Wrong(f"shard {k}: {fmt_pair(want, v)} "
                            "(W · Σ_i (Σ_t m·ℓ / L_i) / B'_global over the non-empty rows)")
            total += v / W
            _grad_finite(got, x, f"shard {k}")
        expect(near(torch.tensor(total, dtype=got.dtype),
                    float(aggregate(loss, mask, "seq_mean_token_mean")), atol=1e-12),
               "the shares, averaged over the ranks, do not add up to GRPO's mean")
    return "W · Σ_i (Σ_t m·ℓ / L_i) / B'_global: exact with responses left out of the loss"
