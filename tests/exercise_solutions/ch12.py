import torch


def _masked(x, mask):
    return torch.where(mask > 0, x, torch.zeros_like(x))


def grpo_correct(logp, old_logp, ref_logp, advantages, mask, eps=0.2, beta=0.04):
    m = mask > 0
    lp, old, ref = (torch.where(m, x, torch.zeros_like(x)) for x in (logp, old_logp, ref_logp))
    r = torch.exp(lp - old)
    a = advantages[:, None]
    clipped = -torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a)
    k3 = torch.exp(ref - lp) - (ref - lp) - 1
    per_tok = torch.where(m, clipped + beta * k3, torch.zeros_like(lp))
    return (per_tok.sum(1) / m.sum(1)).mean()


def grpo_token_mean(logp, old_logp, ref_logp, advantages, mask, eps=0.2, beta=0.04):
    m = mask > 0
    lp, old, ref = (torch.where(m, x, torch.zeros_like(x)) for x in (logp, old_logp, ref_logp))
    r = torch.exp(lp - old)
    a = advantages[:, None]
    per_tok = -torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a) + beta * (torch.exp(ref - lp) - (ref - lp) - 1)
    return torch.where(m, per_tok, torch.zeros_like(lp)).sum() / m.sum()


def grpo_no_kl(logp, old_logp, ref_logp, advantages, mask, eps=0.2, beta=0.04):
    return grpo_correct(logp, old_logp, ref_logp, advantages, mask, eps, 0.0)


def grpo_nan_padding(logp, old_logp, ref_logp, advantages, mask, eps=0.2, beta=0.04):
    r = torch.exp(logp - old_logp)                                   # −inf − (−inf) = NaN on the padding
    a = advantages[:, None]
    per_tok = (-torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a)
               + beta * (torch.exp(ref_logp - logp) - (ref_logp - logp) - 1)) * mask
    return (per_tok.sum(1) / mask.sum(1)).mean()


def grpo_k2(logp, old_logp, ref_logp, advantages, mask, eps=0.2, beta=0.04):
    m = mask > 0
    lp, old, ref = (torch.where(m, x, torch.zeros_like(x)) for x in (logp, old_logp, ref_logp))
    r = torch.exp(lp - old)
    a = advantages[:, None]
    per_tok = -torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a) + beta * 0.5 * (lp - ref) ** 2
    return (torch.where(m, per_tok, torch.zeros_like(lp)).sum(1) / m.sum(1)).mean()


def grpo_flipped(logp, old_logp, ref_logp, advantages, mask, eps=0.2, beta=0.04):
    m = mask > 0
    lp, old, ref = (torch.where(m, x, torch.zeros_like(x)) for x in (logp, old_logp, ref_logp))
    r = torch.exp(lp - old)
    a = advantages[:, None]
    per_tok = torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a) + beta * (torch.exp(ref - lp) - (ref - lp) - 1)
    return (torch.where(m, per_tok, torch.zeros_like(lp)).sum(1) / m.sum(1)).mean()


def seq_ratio_correct(logp, old_logp, mask):
    return torch.where(mask > 0, logp - old_logp, torch.zeros_like(logp)).sum(-1).exp()


def seq_ratio_geometric(logp, old_logp, mask):
    lr = torch.where(mask > 0, logp - old_logp, torch.zeros_like(logp))
    return (lr.sum(-1) / mask.sum(-1)).exp()


def seq_ratio_sum(logp, old_logp, mask):
    lr = torch.where(mask > 0, logp - old_logp, torch.zeros_like(logp))
    return torch.where(mask > 0, lr.exp(), torch.zeros_like(lr)).sum(-1)


def seq_ratio_nan(logp, old_logp, mask):
    return ((logp - old_logp) * mask).sum(-1).exp()


def k3_correct(logp, ref_logp):
    lr = ref_logp - logp
    return torch.exp(lr) - 1 - lr


def k3_swapped(logp, ref_logp):
    lr = logp - ref_logp
    return torch.exp(lr) - 1 - lr


def k3_is_k2(logp, ref_logp):
    return 0.5 * (ref_logp - logp) ** 2


def k3_is_k1(logp, ref_logp):
    return logp - ref_logp


SOLUTIONS = {
    "12.1": {"correct": grpo_correct,
             "wrong": [grpo_token_mean, grpo_no_kl, grpo_nan_padding, grpo_k2, grpo_flipped]},
    "12.2": {"correct": seq_ratio_correct,
             "wrong": [seq_ratio_geometric, seq_ratio_sum, seq_ratio_nan]},
    "12.3": {"correct": k3_correct, "wrong": [k3_swapped, k3_is_k2, k3_is_k1]},
}
