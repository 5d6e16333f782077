import torch


def objective_correct(rho, probs, rewards):
    return (rho[:, None] * probs * rewards).sum()


def objective_uniform_contexts(rho, probs, rewards):
    return (probs * rewards).sum(-1).mean()


def objective_no_policy(rho, probs, rewards):
    return (rho[:, None] * rewards).sum()


def objective_no_rho(rho, probs, rewards):
    return (probs * rewards).sum()


def weights_correct(advantages, mask):
    lengths = mask.sum(-1)
    n = (lengths > 0).sum()
    return torch.where(lengths > 0, advantages / (n * lengths.clamp_min(1)), torch.zeros_like(advantages))


def weights_no_length(advantages, mask):
    return advantages / (mask.sum(-1) > 0).sum()


def weights_all_rows(advantages, mask):
    lengths = mask.sum(-1)
    return torch.where(lengths > 0, advantages / (len(advantages) * lengths.clamp_min(1)),
                       torch.zeros_like(advantages))


def weights_nan_padding(advantages, mask):
    lengths = mask.sum(-1)
    return advantages / ((lengths > 0).sum() * lengths)


SOLUTIONS = {
    "00.1": {"correct": objective_correct,
             "wrong": [objective_uniform_contexts, objective_no_policy, objective_no_rho]},
    "00.2": {"correct": weights_correct,
             "wrong": [weights_no_length, weights_all_rows, weights_nan_padding]},
}
