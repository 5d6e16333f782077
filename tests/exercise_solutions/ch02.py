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
