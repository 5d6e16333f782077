import torch


def softmax_correct(logits):
    z = logits - logits.max(-1, keepdim=True).values
    e = z.exp()
    return e / e.sum(-1, keepdim=True)


def softmax_naive(logits):
    e = logits.exp()
    return e / e.sum(-1, keepdim=True)


def softmax_wrong_dim(logits):
    return torch.softmax(logits, 0)


def variance_correct(rho, probs, means, noise_std):
    J = (rho[:, None] * probs * means).sum()
    return (rho[:, None] * probs * (means ** 2 + noise_std ** 2)).sum() - J ** 2


def variance_second_moment(rho, probs, means, noise_std):
    return (rho[:, None] * probs * (means ** 2 + noise_std ** 2)).sum()


def variance_no_noise(rho, probs, means, noise_std):
    J = (rho[:, None] * probs * means).sum()
    return (rho[:, None] * probs * means ** 2).sum() - J ** 2


def variance_std_not_var(rho, probs, means, noise_std):
    J = (rho[:, None] * probs * means).sum()
    return (rho[:, None] * probs * (means ** 2 + noise_std)).sum() - J ** 2


SOLUTIONS = {
    "01.1": {"correct": softmax_correct, "wrong": [softmax_naive, softmax_wrong_dim]},
    "01.2": {"correct": variance_correct,
             "wrong": [variance_second_moment, variance_no_noise, variance_std_not_var]},
}
