"""Exercises of chapter 11 (a tiny transformer: token log-probs, temperature, the starting policy)."""

from __future__ import annotations

import torch

from . import Wrong, exercise, expect, expect_close, expect_scalar, expect_shape, fmt_pair, near


def _logits(seed: int = 11):
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(3, 5, 9, generator=g, dtype=torch.float64)
    y = torch.randint(9, (3, 5), generator=g)
    return z, y


@exercise("11.1", "Token log-probabilities without a full log-softmax")
def check_token_logprobs(fn):
    """``fn(logits, tokens)``: logits (B, T, V) and token ids (B, T) must return
    log π(tokens[b, t] | h) = z[b, t, y] − logsumexp_v z[b, t, v], shape (B, T), without
    building the (B, T, V) log-softmax (gather the logit, subtract the logsumexp). The result
    must also be right for logits of size 1000 (no overflow) and carry gradients."""
    z, y = _logits()
    want = torch.log_softmax(z, -1).gather(-1, y[..., None]).squeeze(-1)
    got = expect_shape(fn(z.clone(), y.clone()), tuple(y.shape), "log-probs")
    g = got.detach().to(torch.float64)
    if torch.allclose(g, z.gather(-1, y[..., None]).squeeze(-1), atol=1e-9):
        raise Wrong("you return the raw logit z_y: subtract logsumexp_v z_v, the log of the "
                    "softmax's normaliser")
    if torch.allclose(g, torch.softmax(z, -1).gather(-1, y[..., None]).squeeze(-1), atol=1e-9):
        raise Wrong("you return the probability π(y), not its logarithm")
    if torch.allclose(g, torch.log_softmax(z, 1).gather(-1, y[..., None]).squeeze(-1), atol=1e-9):
        raise Wrong("you normalise over the positions (dim 1), not over the vocabulary (the "
                    "last dimension)")
    expect_close(got, want, "log-probs", atol=1e-10, hint="z_y − logsumexp(z)")
    big = fn(1000 * z.clone(), y.clone())
    expect(bool(torch.isfinite(torch.as_tensor(big)).all()),
           "logits of size 1000 give inf or NaN: exp(z) overflows; torch.logsumexp subtracts "
           "the maximum first")
    zz = z.clone().requires_grad_()
    out = expect_shape(fn(zz, y), tuple(y.shape), "log-probs")
    expect(out.requires_grad, "log-probs: must be differentiable in the logits (no .detach())")
    (grad,) = torch.autograd.grad(out.sum(), zz, allow_unused=True)
    expect(grad is not None, "log-probs: no gradient reaches the logits (compute them from z, "
                             "no .detach())")
    onehot = torch.nn.functional.one_hot(y, 9).to(torch.float64)
    expect_close(grad, onehot - torch.softmax(z, -1), "∂ Σ log π / ∂z", atol=1e-10,
                 hint="the gradient is onehot(y) − softmax(z)")
    return "z_y − logsumexp(z): values, large logits and the gradient onehot(y) − softmax(z)"


@exercise("11.2", "The success rate that noisy demonstrations predict")
def check_predicted_success(fn):
    """``fn(q, K, lengths)``: demonstrations in which each answer letter was replaced with
    probability ``q`` by a letter drawn uniformly from ``K`` letters, and answer lengths L
    uniform over the list ``lengths``. A model that fits this data exactly puts probability
    c = 1 − q + q/K on the right letter. Return its success rate when sampling at
    temperature 1: E_L[c^L] (a float)."""
    for q, K, lengths in [(0.25, 5, [2, 3, 4, 5, 6]), (0.1, 3, [1, 4]), (0.5, 10, [3])]:
        t = expect_scalar(fn(q, K, list(lengths)), "success rate")
        got = float(t)
        c = 1 - q + q / K
        want = sum(c ** L for L in lengths) / len(lengths)
        if near(t, sum((1 - q) ** L for L in lengths) / len(lengths), atol=1e-12):
            raise Wrong("you use c = 1 − q: a replaced letter is still right with probability "
                        "1/K (the replacement is drawn from all K letters)")
        mean_len = sum(lengths) / len(lengths)
        if len(set(lengths)) > 1 and near(t, c ** mean_len, atol=1e-12):
            raise Wrong("you raise c to the mean length: the success rate is the mean of c^L "
                        "over lengths, which is larger (c^L is convex in L)")
        expect(near(t, want, atol=1e-12, rtol=1e-10),
               f"q = {q}, K = {K}, lengths {lengths}: {fmt_pair(want, got)}")
    return "E_L[(1 − q + q/K)^L] for three settings"


@exercise("11.3", "Log-probabilities at a temperature")
def check_temperature(fn):
    """``fn(logits, tokens, tau)``: return log π_τ(y) = log softmax(z/τ)[y], shape (B, T), for
    logits (B, T, V), token ids (B, T) and a temperature τ > 0: the log-probs under which
    tokens sampled at temperature τ were drawn (so that the trainer's ratio starts at 1)."""
    z, y = _logits(12)
    for tau in (0.5, 1.0, 2.0):
        got = expect_shape(fn(z.clone(), y.clone(), tau), tuple(y.shape), f"log π_τ (τ = {tau})")
        g = got.detach().to(torch.float64)
        want = torch.log_softmax(z / tau, -1).gather(-1, y[..., None]).squeeze(-1)
        if tau != 1.0:
            if torch.allclose(g, torch.log_softmax(z, -1).gather(-1, y[..., None]).squeeze(-1) / tau,
                              atol=1e-9):
                raise Wrong(f"τ = {tau}: you divide the log-probs by τ; divide the *logits* by τ "
                            "before the softmax (the result must still be normalised)")
            if torch.allclose(g, torch.log_softmax(z * tau, -1).gather(-1, y[..., None]).squeeze(-1),
                              atol=1e-9):
                raise Wrong(f"τ = {tau}: you multiply the logits by τ; temperature divides them "
                            "(τ > 1 flattens the distribution)")
        expect_close(got, want, f"log π_τ (τ = {tau})", atol=1e-10,
                     hint="log_softmax(z / τ) at the sampled token")
    return "log softmax(z/τ)[y] for τ = 0.5, 1 and 2"
