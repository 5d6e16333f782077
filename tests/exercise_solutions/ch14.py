import torch


# 14.1 GSPO's sequence ratio
def seq_ratio_correct(logp, old_logp, mask):
    m = mask > 0
    lr = torch.where(m, logp - old_logp, torch.zeros((), dtype=logp.dtype))
    return (lr.sum(-1) / mask.sum(-1)).exp()


def seq_ratio_arithmetic(logp, old_logp, mask):
    m = mask > 0
    return torch.where(m, (logp - old_logp).exp(), torch.zeros((), dtype=logp.dtype)).sum(-1) / mask.sum(-1)


def seq_ratio_product(logp, old_logp, mask):
    m = mask > 0
    return torch.where(m, logp - old_logp, torch.zeros((), dtype=logp.dtype)).sum(-1).exp()


def seq_ratio_unmasked(logp, old_logp, mask):
    return (logp - old_logp).mean(-1).exp()


# 14.2 CISPO's loss
def cispo_correct(logp, old_logp, advantages, cap):
    w = torch.clamp((logp - old_logp).exp(), max=cap).detach()
    return -w * advantages * logp


def cispo_no_detach(logp, old_logp, advantages, cap):
    w = torch.clamp((logp - old_logp).exp(), max=cap)
    return -w * advantages * logp


def cispo_ppo_clip(logp, old_logp, advantages, cap):
    r = (logp - old_logp).exp()
    return -torch.minimum(r * advantages, torch.clamp(r, 0.8, cap) * advantages)


# 14.3 TIS weights
def tis_correct(old_logp, sampler_logp, mask, C):
    m = mask > 0
    return torch.where(m, torch.clamp((old_logp - sampler_logp).exp(), max=C), torch.zeros((), dtype=old_logp.dtype))


def tis_inverted(old_logp, sampler_logp, mask, C):
    m = mask > 0
    return torch.where(m, torch.clamp((sampler_logp - old_logp).exp(), max=C), torch.zeros((), dtype=old_logp.dtype))


def tis_untruncated(old_logp, sampler_logp, mask, C):
    m = mask > 0
    return torch.where(m, (old_logp - sampler_logp).exp(), torch.zeros((), dtype=old_logp.dtype))


def tis_sequence(old_logp, sampler_logp, mask, C):
    m = mask > 0
    lr = torch.where(m, old_logp - sampler_logp, torch.zeros((), dtype=old_logp.dtype))
    return lr.sum(-1, keepdim=True).exp().clamp(max=C) * mask


# 14.4 the entropy change
def dH_correct(probs, dz):
    lp = probs.log()
    return -(probs * (lp - probs @ lp) * (dz - probs @ dz)).sum()


def dH_flipped(probs, dz):
    return -dH_correct(probs, dz)


def dH_cov_probs(probs, dz):
    return -(probs * (probs - probs @ probs) * (dz - probs @ dz)).sum()


SOLUTIONS = {
    "14.1": {"correct": seq_ratio_correct,
             "wrong": [seq_ratio_arithmetic, seq_ratio_product, seq_ratio_unmasked]},
    "14.2": {"correct": cispo_correct, "wrong": [cispo_no_detach, cispo_ppo_clip]},
    "14.3": {"correct": tis_correct, "wrong": [tis_inverted, tis_untruncated, tis_sequence]},
    "14.4": {"correct": dH_correct, "wrong": [dH_flipped, dH_cov_probs]},
}
