import torch


def grpo_correct(rewards, G):
    r = rewards.view(-1, G)
    c = r - r.mean(1, keepdim=True)
    sd = r.std(1, keepdim=True)
    return torch.where(sd > 0, c / torch.where(sd > 0, sd, torch.ones_like(sd)),
                       torch.zeros_like(c)).reshape(-1)


def grpo_trl_eps(rewards, G):                       # TRL's ε = 1e-4 is accepted
    r = rewards.view(-1, G)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).reshape(-1)


def grpo_population_std(rewards, G):
    r = rewards.view(-1, G)
    sd = r.std(1, keepdim=True, unbiased=False)
    c = r - r.mean(1, keepdim=True)
    return torch.where(sd > 0, c / torch.where(sd > 0, sd, torch.ones_like(sd)),
                       torch.zeros_like(c)).reshape(-1)


def grpo_nan_on_silent(rewards, G):
    r = rewards.view(-1, G)
    return ((r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True)).reshape(-1)


def grpo_batch_mean(rewards, G):
    return (rewards - rewards.mean()) / (rewards.std() + 1e-6)


def rloo_correct(rewards, G):
    r = rewards.view(-1, G)
    return (r - (r.sum(1, keepdim=True) - r) / (G - 1)).reshape(-1)


def rloo_includes_self(rewards, G):
    r = rewards.view(-1, G)
    return (r - r.mean(1, keepdim=True)).reshape(-1)


def rloo_divides_by_G(rewards, G):
    r = rewards.view(-1, G)
    return (r - (r.sum(1, keepdim=True) - r) / G).reshape(-1)


def ds_correct(p, rho, G):
    return 1.0 / (1.0 - float(rho @ (p ** G + (1 - p) ** G)))


def ds_kept_fraction(p, rho, G):
    return 1.0 - float(rho @ (p ** G + (1 - p) ** G))


def ds_unweighted(p, rho, G):
    return 1.0 / (1.0 - float((p ** G + (1 - p) ** G).mean()))


def ds_per_context(p, rho, G):
    return 1.0 / (1.0 - (p ** G + (1 - p) ** G))


SOLUTIONS = {
    "08.1": {"correct": grpo_correct,
             "wrong": [grpo_population_std, grpo_nan_on_silent, grpo_batch_mean]},
    "08.2": {"correct": rloo_correct, "wrong": [rloo_includes_self, rloo_divides_by_G]},
    "08.3": {"correct": ds_correct, "wrong": [ds_kept_fraction, ds_unweighted, ds_per_context]},
}
