import math

import torch


def _rho(n, c, k):
    """The unbiased pass@k estimate from n samples with c correct."""
    if k == 0:
        return 0.0
    return 1 - math.comb(max(n - c, 0), k) / math.comb(n, k)


def pkpo_correct(rewards, k):
    n, c = rewards.shape[0], int(rewards.sum())
    wrong = k * _rho(n - 1, c, k - 1)
    return torch.where(rewards > 0, torch.full_like(rewards, float(k)), torch.full_like(rewards, wrong))


def pkpo_no_k(rewards, k):             # drops the factor k: unbiased for ∇pass@k / k only
    return pkpo_correct(rewards, k) / k


def pkpo_wrong_rho(rewards, k):        # uses ρ(n, c, k) of the whole group for wrong responses
    n, c = rewards.shape[0], int(rewards.sum())
    wrong = k * _rho(n, c, k)
    return torch.where(rewards > 0, torch.full_like(rewards, float(k)), torch.full_like(rewards, wrong))


def pkpo_plain_reward(rewards, k):     # pass@1's reward, whatever k
    return rewards.clone()


def soft_correct(lengths, max_tokens, cache):
    L = lengths.to(torch.float64)
    start = max_tokens - cache
    ramp = (start - L) / cache
    return torch.where(L <= start, torch.zeros_like(L), torch.where(L <= max_tokens, ramp, -torch.ones_like(L)))


def soft_positive(lengths, max_tokens, cache):
    return -soft_correct(lengths, max_tokens, cache)


def soft_no_cap(lengths, max_tokens, cache):   # keeps ramping below −1 past the budget
    L = lengths.to(torch.float64)
    start = max_tokens - cache
    return torch.where(L <= start, torch.zeros_like(L), (start - L) / cache)


def soft_off_by_one(lengths, max_tokens, cache):
    L = lengths.to(torch.float64)
    start = max_tokens - cache
    ramp = (start - L + 1) / cache
    return torch.where(L <= start, torch.zeros_like(L), torch.where(L <= max_tokens, ramp, -torch.ones_like(L)))


def opo_correct(rewards, lengths):
    L = lengths.to(rewards.dtype)
    return rewards - (L * rewards).sum() / L.sum()


def opo_plain_mean(rewards, lengths):
    return rewards - rewards.mean()


def opo_inverse_length(rewards, lengths):
    w = 1 / lengths.to(rewards.dtype)
    return rewards - (w * rewards).sum() / w.sum()


SOLUTIONS = {
    "13.1": {"correct": pkpo_correct, "wrong": [pkpo_no_k, pkpo_wrong_rho, pkpo_plain_reward]},
    "13.2": {"correct": soft_correct, "wrong": [soft_positive, soft_no_cap, soft_off_by_one]},
    "13.3": {"correct": opo_correct, "wrong": [opo_plain_mean, opo_inverse_length]},
}
