import torch


def mask_correct(tokens, eos_id):
    is_eos = (tokens == eos_id).long()
    before = torch.cumsum(is_eos, 1) - is_eos
    return (before == 0).double()


def mask_without_eos(tokens, eos_id):
    return (torch.cumsum((tokens == eos_id).long(), 1) == 0).double()


def mask_not_eos(tokens, eos_id):
    return (tokens != eos_id).double()


def mask_all_ones(tokens, eos_id):
    return torch.ones(tokens.shape, dtype=torch.float64)


def logprob_correct(token_logp, mask):
    return torch.where(mask > 0, token_logp, torch.zeros_like(token_logp)).sum(-1)


def logprob_unmasked(token_logp, mask):
    return token_logp.sum(-1)


def logprob_mean(token_logp, mask):
    return torch.where(mask > 0, token_logp, torch.zeros_like(token_logp)).sum(-1) / mask.sum(-1)


def logprob_times_mask(token_logp, mask):                # NaN where the padding holds −inf
    return (token_logp * mask).sum(-1)


def rtg_correct(r, m):
    return m * torch.flip(torch.cumsum(torch.flip(r * m, [-1]), -1), [-1])


def rtg_whole(r, m):
    return m * (r * m).sum(-1, keepdim=True)


def rtg_past(r, m):
    return m * torch.cumsum(r * m, -1)


def rtg_strictly_future(r, m):
    return rtg_correct(r, m) - r * m


def rtg_padding_rewards(r, m):                   # rewards on the padding leak into G_t
    return m * torch.flip(torch.cumsum(torch.flip(r, [-1]), -1), [-1])


SOLUTIONS = {
    "09.1": {"correct": mask_correct, "wrong": [mask_without_eos, mask_not_eos, mask_all_ones]},
    "09.2": {"correct": logprob_correct,
             "wrong": [logprob_unmasked, logprob_mean, logprob_times_mask]},
    "09.3": {"correct": rtg_correct,
             "wrong": [rtg_whole, rtg_past, rtg_strictly_future, rtg_padding_rewards]},
}
