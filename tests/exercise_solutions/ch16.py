import torch


def _r(logp, teacher_logp, mask):
    m = mask > 0
    return torch.where(m, teacher_logp - logp, torch.zeros_like(logp))


def rtg_correct(logp, teacher_logp, mask):
    r = _r(logp, teacher_logp, mask)
    return r.flip(-1).cumsum(-1).flip(-1) * mask


def rtg_discount_zero(logp, teacher_logp, mask):
    return _r(logp, teacher_logp, mask)


def rtg_whole_sequence(logp, teacher_logp, mask):
    return _r(logp, teacher_logp, mask).sum(-1, keepdim=True) * mask


def rtg_nan_padding(logp, teacher_logp, mask):
    r = (teacher_logp - logp) * mask                     # (−inf) − (−inf) = NaN on the padding
    return r.flip(-1).cumsum(-1).flip(-1) * mask


def rtg_sign_flipped(logp, teacher_logp, mask):
    return -rtg_correct(logp, teacher_logp, mask)


def _zscore(rewards, G):
    r = rewards.view(-1, G)
    c = r - r.mean(1, keepdim=True)
    sd = r.std(1, keepdim=True)
    return torch.where(sd > 0, c / (sd + 1e-6), torch.zeros_like(c)).reshape(-1)


def gated_correct(rewards, group_size, teacher_adv, mask, coef):
    A = _zscore(rewards, group_size)[:, None] * mask
    fail = (rewards.view(-1, group_size) <= 0).all(1).repeat_interleave(group_size)
    return A + coef * fail[:, None].to(A.dtype) * teacher_adv * mask


def gated_everywhere(rewards, group_size, teacher_adv, mask, coef):
    return _zscore(rewards, group_size)[:, None] * mask + coef * teacher_adv * mask


def gated_zero_variance(rewards, group_size, teacher_adv, mask, coef):
    r = rewards.view(-1, group_size)
    zv = (r == r[:, :1]).all(1).repeat_interleave(group_size)
    return _zscore(rewards, group_size)[:, None] * mask + coef * zv[:, None].to(mask.dtype) * teacher_adv * mask


def gated_no_teacher(rewards, group_size, teacher_adv, mask, coef):
    return _zscore(rewards, group_size)[:, None] * mask


def jsd_correct(student_logits, teacher_logits, beta):
    ls, lt = torch.log_softmax(student_logits, -1), torch.log_softmax(teacher_logits, -1)
    m = torch.log((1 - beta) * ls.exp() + beta * lt.exp())
    return beta * (lt.exp() * (lt - m)).sum(-1) + (1 - beta) * (ls.exp() * (ls - m)).sum(-1)


def jsd_swapped(student_logits, teacher_logits, beta):
    return jsd_correct(teacher_logits, student_logits, beta)


def jsd_mixture_swapped(student_logits, teacher_logits, beta):
    ls, lt = torch.log_softmax(student_logits, -1), torch.log_softmax(teacher_logits, -1)
    m = torch.log(beta * ls.exp() + (1 - beta) * lt.exp())
    return beta * (lt.exp() * (lt - m)).sum(-1) + (1 - beta) * (ls.exp() * (ls - m)).sum(-1)


def jsd_symmetric_kl(student_logits, teacher_logits, beta):
    ls, lt = torch.log_softmax(student_logits, -1), torch.log_softmax(teacher_logits, -1)
    return 0.5 * (lt.exp() * (lt - ls)).sum(-1) + 0.5 * (ls.exp() * (ls - lt)).sum(-1)


SOLUTIONS = {
    "16.1": {"correct": rtg_correct,
             "wrong": [rtg_discount_zero, rtg_whole_sequence, rtg_nan_padding, rtg_sign_flipped]},
    "16.2": {"correct": gated_correct,
             "wrong": [gated_everywhere, gated_zero_variance, gated_no_teacher]},
    "16.3": {"correct": jsd_correct,
             "wrong": [jsd_swapped, jsd_mixture_swapped, jsd_symmetric_kl]},
}
