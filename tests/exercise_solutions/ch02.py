import torch


def score_correct(probs, a):
    return torch.nn.functional.one_hot(torch.tensor(a), probs.shape[0]).to(probs.dtype) - probs


def score_flipped(probs, a):
    return probs - torch.nn.functional.one_hot(torch.tensor(a), probs.shape[0]).to(probs.dtype)


def score_probs(probs, a):
    return probs


def score_onehot_only(probs, a):
    return torch.nn.functional.one_hot(torch.tensor(a), probs.shape[0]).to(probs.dtype)


SOLUTIONS = {
    "02.1": {"correct": score_correct,
             "wrong": [score_flipped, score_probs, score_onehot_only]},
}


def estimate_correct(probs, s, a, r):
    onehot = torch.nn.functional.one_hot(a, probs.shape[1]).to(probs.dtype)
    g = torch.zeros_like(probs)
    g.index_add_(0, s, r[:, None] * (onehot - probs[s]))
    return g / len(s)


def estimate_sum(probs, s, a, r):
    return estimate_correct(probs, s, a, r) * len(s)


def estimate_no_reward(probs, s, a, r):
    return estimate_correct(probs, s, a, torch.ones_like(r))


def estimate_flipped(probs, s, a, r):
    return -estimate_correct(probs, s, a, r)


def variance_correct(rho, probs, means):
    sq = 1 - 2 * probs + (probs ** 2).sum(-1, keepdim=True)
    V = (probs * means).sum(-1, keepdim=True)
    grad = rho[:, None] * probs * (means - V)
    return (rho[:, None] * probs * means ** 2 * sq).sum() - (grad ** 2).sum()


def variance_second_moment(rho, probs, means):
    sq = 1 - 2 * probs + (probs ** 2).sum(-1, keepdim=True)
    return (rho[:, None] * probs * means ** 2 * sq).sum()


def variance_no_score_norm(rho, probs, means):
    V = (probs * means).sum(-1, keepdim=True)
    grad = rho[:, None] * probs * (means - V)
    return (rho[:, None] * probs * means ** 2).sum() - (grad ** 2).sum()


SOLUTIONS["02.2"] = {"correct": estimate_correct,
                     "wrong": [estimate_sum, estimate_no_reward, estimate_flipped]}
SOLUTIONS["02.3"] = {"correct": variance_correct,
                     "wrong": [variance_second_moment, variance_no_score_norm]}
