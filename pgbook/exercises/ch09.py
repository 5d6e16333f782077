"""Exercises of chapter 09 (sequences: the enumerable autoregressive language model)."""

from __future__ import annotations

import torch

from ..reward.advantages import reward_to_go
from ..trajectory.tokens import sequence_logprob
from ..worlds.seqlm import MLPPolicy, SeqSpace
from . import Wrong, exercise, expect, expect_close, expect_shape


def _world():
    space = SeqSpace(tokens=("a", "b", "c"), max_len=5,
                     rho=torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    policy = MLPPolicy(space, hidden=8)
    theta = torch.linspace(-1.0, 1.0, policy.n_params, dtype=torch.float64).sin()
    return space, policy, theta, space.enumerate()


@exercise("09.1", "The response mask")
def check_response_mask(fn):
    """``fn(tokens, eos_id)``: ``tokens`` (B, T) integer token ids of sampled responses
    (padded with EOS after the first EOS, as in chapter 09) must return the mask (B, T),
    1.0 on every token up to *and including* the first EOS and 0.0 after it; a row without
    EOS (cut at T) is all ones."""
    space, _, _, seqs = _world()
    got = fn(seqs.tokens.clone(), space.eos_id)
    got = expect_shape(got, tuple(seqs.tokens.shape), "mask")
    g = got.detach().to(torch.float64)
    want = seqs.mask.to(torch.float64)
    if torch.equal(g, want - (seqs.tokens == space.eos_id).to(torch.float64) * want):
        raise Wrong("you leave out the EOS token: stopping is an action the policy chose, with a "
                    "probability of its own; it belongs to log p_θ(y|x)")
    if bool((g == 1).all()):
        raise Wrong("your mask is 1 everywhere: the EOS padding after the first EOS was written "
                    "by the code, not sampled, and must be 0")
    expect_close(got, want, "mask", atol=0, rtol=0,
                 hint="1 up to and including the first EOS, 0 after it")
    return f"the mask of all {len(seqs)} enumerated responses"


@exercise("09.2", "A sequence's log-probability from its token log-probs")
def check_sequence_logprob(fn):
    """``fn(token_logp, mask)``: ``token_logp`` (B, T) holds log π_θ(y_t|h_t) (the padding
    positions hold anything, even −inf) and ``mask`` (B, T) is 1 on response tokens; return
    log p_θ(y|x) = Σ_t m_t log π_θ(y_t|h_t), shape (B,)."""
    space, policy, theta, seqs = _world()
    with torch.no_grad():
        tok = policy.token_logprobs(theta, seqs.x, seqs.tokens)
    lp = torch.where(seqs.mask > 0, tok, torch.full_like(tok, -1.5))   # a finite padding value
    got = expect_shape(fn(lp.clone(), seqs.mask.clone()), (len(seqs),), "log p(y|x)")
    g = got.detach().to(torch.float64)
    want = sequence_logprob(lp, seqs.mask)
    if torch.allclose(g, lp.sum(-1), atol=1e-9):
        raise Wrong("you sum over the padding too: those tokens were written by the code after "
                    "the response ended, not sampled by the policy; multiply by the mask")
    if torch.allclose(g, want / seqs.mask.sum(-1), atol=1e-9):
        raise Wrong("you average over the tokens: log p(y|x) of a product of probabilities is "
                    "the sum of the token log-probs")
    expect_close(got, want, "log p(y|x)", atol=1e-10)
    total = torch.exp(g).view(space.X, -1).sum(-1)
    expect(torch.allclose(total, torch.ones_like(total), atol=1e-10),
           "p(y|x) does not sum to 1 over the responses of each prompt")
    pad = torch.where(seqs.mask > 0, tok, torch.full_like(tok, -torch.inf))
    g2 = fn(pad.clone(), seqs.mask.clone())
    expect(bool(torch.isfinite(torch.as_tensor(g2)).all()),
           "with −inf on the padding your result holds NaN: 0 · (−inf) is NaN, so "
           "`(token_logp * mask).sum(-1)` fails there; select with torch.where(mask > 0, "
           "token_logp, 0) instead")
    expect_close(g2, want, "log p(y|x) (−inf padding)", atol=1e-10)
    return "Σ_t m_t log π_θ(y_t|h_t), and p(y|x) sums to 1 over the 364 responses of each prompt"


@exercise("09.3", "Reward-to-go weights")
def check_reward_to_go(fn):
    """``fn(token_rewards, mask)``: per-token rewards r_t (B, T) and the response mask (B, T)
    must give G_t = m_t Σ_{t' ≥ t} m_t' r_t' (B, T): the reward from token t to the end of
    the response, token t's own reward included, 0 on the padding."""
    _, _, _, seqs = _world()
    g = torch.Generator().manual_seed(9)
    r = torch.randn(seqs.tokens.shape, generator=g, dtype=torch.float64)
    m = seqs.mask
    got = expect_shape(fn(r.clone(), m.clone()), tuple(r.shape), "G_t")
    gd = got.detach().to(torch.float64)
    want = reward_to_go(r, m)
    whole = m * (r * m).sum(-1, keepdim=True)
    if torch.allclose(gd, whole, atol=1e-10):
        raise Wrong("every token gets the whole response's reward R: that is the sequence "
                    "weight; reward-to-go keeps only the rewards from token t on")
    past = m * torch.cumsum(r * m, -1)
    if torch.allclose(gd, past, atol=1e-10):
        raise Wrong("you sum the rewards *up to* t: the rewards token t can affect are those "
                    "from t on (reverse the cumulative sum)")
    if torch.allclose(gd, want - r * m, atol=1e-10):
        raise Wrong("you leave out token t's own reward r_t, which y_t does affect")
    if not torch.allclose(gd, want, atol=1e-10) and torch.allclose(gd * m, want, atol=1e-10):
        raise Wrong("the weights are not zero on the padding: multiply by the mask")
    leak = m * torch.flip(torch.cumsum(torch.flip(r, [-1]), -1), [-1])
    if torch.allclose(gd, leak, atol=1e-10):
        raise Wrong("the rewards stored on the padding enter your sums: mask the rewards "
                    "(r · m) before summing them")
    expect_close(got, want, "G_t", atol=1e-10)
    return "G_t = Σ_{t'≥t} m r on every enumerated response, zero on the padding"
