def adv_correct(probs, means):
    return means - (probs * means).sum(-1, keepdim=True)


def adv_plain_mean(probs, means):
    return means - means.mean(-1, keepdim=True)


def adv_global(probs, means):
    import torch
    rho = torch.tensor([0.5, 0.3, 0.2], dtype=probs.dtype)
    return means - (rho[:, None] * probs * means).sum()


def adv_flipped(probs, means):
    return (probs * means).sum(-1, keepdim=True) - means


def bstar_correct(probs, means):
    sq = 1 - 2 * probs + (probs ** 2).sum(-1, keepdim=True)
    w = probs * sq
    return (w * means).sum(-1) / w.sum(-1)


def bstar_value(probs, means):
    return (probs * means).sum(-1)


def bstar_no_pi(probs, means):
    sq = 1 - 2 * probs + (probs ** 2).sum(-1, keepdim=True)
    return (sq * means).sum(-1) / sq.sum(-1)


SOLUTIONS = {
    "03.1": {"correct": adv_correct, "wrong": [adv_plain_mean, adv_global, adv_flipped]},
    "03.2": {"correct": bstar_correct, "wrong": [bstar_value, bstar_no_pi]},
}
